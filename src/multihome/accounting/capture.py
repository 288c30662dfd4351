"""Content capture of one call (docs/encryption.md "Content capture"): the prompt and the answer
of a call whose tenant has capture on, as the client sent and received them, up to `max_bytes`
each. The tracker holds one only for such a call; every other call pays one set lookup.
A `CaptureSink` (crypto/capture.py) seals and stores it off the hot path."""

from __future__ import annotations

import hashlib
from typing import Protocol

from .record import CallRecord


class Captured:
    __slots__ = ("prompt", "parts", "size", "limit", "truncated")

    def __init__(self, prompt: bytes, limit: int) -> None:
        self.prompt = prompt[:limit]
        self.truncated = len(prompt) > limit
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit

    def add(self, piece: bytes) -> None:
        """More of the answer (a unary body, or one stream piece), kept up to the limit."""
        room = self.limit - self.size
        if len(piece) > room:
            self.truncated = True
            piece = piece[: max(room, 0)]
        if piece:
            self.parts.append(piece)
            self.size += len(piece)

    @property
    def answer(self) -> bytes:
        return b"".join(self.parts)


class TeeDigest:
    """The stream sender's response digest that also keeps what it hashes for the capture."""

    __slots__ = ("_sha", "_capture")

    def __init__(self, capture: Captured) -> None:
        self._sha = hashlib.sha256()
        self._capture = capture

    def update(self, piece: bytes) -> None:
        self._sha.update(piece)
        self._capture.add(piece)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class CaptureSink(Protocol):
    tenants: frozenset[str]
    max_bytes: int

    def record(self, captured: Captured, call: CallRecord) -> None:
        """Take a finished call's capture; never blocks, never raises."""
