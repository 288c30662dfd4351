"""API-key format, hashing and the in-memory index the gateway checks presented keys against.

A key is `mh_<prefix>_<secret>`: `prefix` is 8 visible characters that locate the record, the
secret is 32 bytes from the OS CSPRNG. The database stores only SHA-256(whole key) in hex. A
fast hash is right here because the input has 256 bits of entropy: nobody can guess or
dictionary-attack it, so a slow password hash (bcrypt/argon2) would only add latency to every
call without adding safety. The comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from .records import KeyRecord

KEY_PREFIX_LEN = 8


def hash_key(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()


def parse_prefix(presented: str) -> str | None:
    """The record-locating prefix of a well-formed key, else None."""
    if len(presented) < 3 + KEY_PREFIX_LEN + 2 or not presented.startswith("mh_"):
        return None
    if presented[3 + KEY_PREFIX_LEN] != "_":
        return None
    return presented[3 : 3 + KEY_PREFIX_LEN]


class KeyIndex:
    """Usable keys by prefix, built from a Snapshot (revoked keys are not in it)."""

    __slots__ = ("_by_id", "_by_prefix")

    def __init__(self, by_prefix: Mapping[str, KeyRecord]) -> None:
        self._by_prefix = by_prefix
        self._by_id: dict[str, KeyRecord] | None = None  # built on the first `by_id` (queued work only asks)

    def __len__(self) -> int:
        return len(self._by_prefix)

    def lookup(self, presented_key: str, now: datetime | None = None) -> KeyRecord | None:
        prefix = parse_prefix(presented_key)
        if prefix is None:
            return None
        record = self._by_prefix.get(prefix)
        if record is None:
            return None
        if not hmac.compare_digest(hash_key(presented_key), record.hash):
            return None
        if not record.usable_at(now or datetime.now(UTC)):
            return None
        return record

    def by_id(self, key_id: str, now: datetime | None = None) -> KeyRecord | None:
        """The usable key with this id (no secret presented): for work queued by a key and run later, which
        holds the key's id only (identity/stored_caller.py). None once it is revoked, expired or deleted."""
        if self._by_id is None:
            self._by_id = {record.id: record for record in self._by_prefix.values()}
        record = self._by_id.get(key_id)
        if record is None or not record.usable_at(now or datetime.now(UTC)):
            return None
        return record
