"""Readable prefixed random ids (`ten_3kq...`), ids that carry their row's creation time, and API-key secrets."""

from __future__ import annotations

import datetime as dt
import secrets
import string

_ID_ALPHABET = string.ascii_lowercase + string.digits
_B36 = string.digits + string.ascii_lowercase  # in the order of their values, as int(_, 36) reads them
_B36_SET = frozenset(_B36)
_B62 = string.digits + string.ascii_letters


def new_id(kind: str) -> str:
    """`kind_` + 20 random [a-z0-9] characters (~103 bits)."""
    return f"{kind}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TIME_CHARS = 10  # base 36 digits of the microseconds since 1970: to the year 2085
_TIMED_CHARS = _TIME_CHARS + 12  # then 12 random ones (~62 bits); 22 in all, so no random id (20) reads as one


def timed_id(kind: str, at: dt.datetime) -> str:
    """`kind_` + `at` to the microsecond in 10 [0-9a-z] characters + 12 random ones: the id of a row created
    at `at` (its `created_at`) in a list ordered by creation, so that a page's cursor (`after=<id>`) keeps its
    place when its row is deleted before the next page is read (`minted_at`; storage/row_reads.py)."""
    micros = (at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{kind}_" + _base36(micros, _TIME_CHARS) + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def minted_at(row_id: str) -> dt.datetime | None:
    """The time a `timed_id` carries; None for any other id."""
    tail = row_id.rpartition("_")[2]
    if len(tail) != _TIMED_CHARS or not set(tail) <= _B36_SET:
        return None
    return _EPOCH + dt.timedelta(microseconds=int(tail[:_TIME_CHARS], 36))


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out))


def base62(data: bytes, width: int) -> str:
    n = int.from_bytes(data, "big")
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(reversed(out))


def new_key_prefix() -> str:
    """8 visible [a-z0-9] characters that identify a key in lists, logs and lookups (not secret)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def new_key_secret(prefix: str) -> str:
    """`mh_<prefix>_<43 base62 chars>`: the random part is 32 bytes from the OS CSPRNG."""
    return f"mh_{prefix}_{base62(secrets.token_bytes(32), 43)}"
