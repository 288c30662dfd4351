"""Readable prefixed random ids (`ten_3kq...`) and API-key secrets."""

from __future__ import annotations

import secrets
import string

_ID_ALPHABET = string.ascii_lowercase + string.digits
_B62 = string.digits + string.ascii_letters


def new_id(kind: str) -> str:
    """`kind_` + 20 random [a-z0-9] characters (~103 bits)."""
    return f"{kind}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


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
