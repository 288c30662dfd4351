"""The ends of a chain's files, read without reading the files whole: the genesis record (first line),
the last complete event (last line ending in a newline) and the last checkpoint.

The writer reads them to link a new chain to the earlier ones; `verify` reads the genesis records
of every chain first, to know which seqs of which chain other chains vouch for before it walks them.
"""

from __future__ import annotations

import os

import msgspec

from .checkpoint import Checkpoint, parse_checkpoint
from .events import GENESIS_KIND

CHAIN_SUFFIX = ".jsonl"
CP_SUFFIX = ".checkpoints.jsonl"
_CHUNK = 64 * 1024


def chain_names(directory: str) -> list[str]:
    """Chains with an event file in `directory`, oldest first (ids start with their start time)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n[: -len(CHAIN_SUFFIX)] for n in names if n.endswith(CHAIN_SUFFIX) and not n.endswith(CP_SUFFIX))


def first_line(path: str) -> bytes | None:
    """The first line without its newline; None when the file has no complete line (or is gone)."""
    try:
        with open(path, "rb") as f:
            data = b""
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    return None
                cut = chunk.find(b"\n")
                if cut >= 0:
                    return data + chunk[:cut]
                data += chunk
    except FileNotFoundError:
        return None


def last_line(path: str) -> bytes | None:
    """The last line that ends in a newline, without it (a torn tail is skipped); None if there is none."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        tail = b""
        pos = end
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            last_nl = tail.rfind(b"\n")
            if last_nl < 0:
                continue  # still inside a torn tail
            start = tail.rfind(b"\n", 0, last_nl)
            if start >= 0 or pos == 0:
                return tail[start + 1 : last_nl]
        return None


def decode(line: bytes | None) -> dict | None:
    if line is None:
        return None
    try:
        event = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def genesis_record(directory: str, chain: str) -> dict | None:
    """The chain's genesis record (seq 0), unverified; None for a chain written before they existed."""
    event = decode(first_line(os.path.join(directory, chain + CHAIN_SUFFIX)))
    if event is None or event.get("seq") != 0 or event.get("kind") != GENESIS_KIND:
        return None
    return event if isinstance(event.get("body"), dict) else None


def last_checkpoint(directory: str, chain: str) -> Checkpoint | None:
    line = last_line(os.path.join(directory, chain + CP_SUFFIX))
    if line is None:
        return None
    try:
        return parse_checkpoint(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
