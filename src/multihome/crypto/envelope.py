"""The sealed-record format (docs/encryption.md "Envelope format"), byte by byte:

    offset  size  field
    0       3     magic  b"MHE"
    3       1     format version (1)
    4       1     KMS backend code (1 local, 2 aws, 3 vault, 4 azure)
    5       2     n1 = length of the KEK id (big-endian)
    7       n1    KEK id, UTF-8 (the key the data key was first wrapped under)
    .       1     n2 = length of the KEK version
    .       n2    KEK version, UTF-8 (the version at seal time; may be "" where the KMS hides it)
    .       1     n3 = length of the data key id
    .       n3    data key id, ASCII (`dk_...`, the `data_keys` row)
    .       12    nonce (random)
    .       rest  AES-256-GCM ciphertext with its 16-byte tag appended

Associated data = b"multihome.seal.v1" + length-prefixed tenant, purpose, table, record id + the
header up to (not including) the nonce. So moving the bytes to another row, tenant or purpose, or
editing any header field (a key version, say), makes the tag check fail.
"""

from __future__ import annotations

import functools
import struct
from typing import Final, NamedTuple

from .errors import MalformedCiphertext

MAGIC: Final = b"MHE"
FORMAT_VERSION: Final = 1
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
BACKEND_CODES: Final = {"local": 1, "aws": 2, "vault": 3, "azure": 4}
BACKEND_NAMES: Final = {code: name for name, code in BACKEND_CODES.items()}
_AAD_PREFIX: Final = b"multihome.seal.v1"
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_MIN = len(MAGIC) + 1 + 1 + 2 + 1 + 1 + NONCE_BYTES + TAG_BYTES


class Header(NamedTuple):
    backend: str
    kek_id: str
    kek_version: str
    data_key_id: str
    end: int  # offset of the nonce: bytes [0, end) are the header bound into the associated data


def encode_header(backend: str, kek_id: str, kek_version: str, data_key_id: str) -> bytes:
    """Everything before the nonce; built once per data key and reused for every seal under it."""
    kek, version, dek = kek_id.encode(), kek_version.encode(), data_key_id.encode("ascii")
    if len(kek) > 0xFFFF or len(version) > 0xFF or len(dek) > 0xFF:
        raise ValueError("KEK id, KEK version or data key id too long for the envelope header")
    return b"".join(
        (
            MAGIC,
            bytes((FORMAT_VERSION, BACKEND_CODES[backend])),
            _U16.pack(len(kek)),
            kek,
            bytes((len(version),)),
            version,
            bytes((len(dek),)),
            dek,
        )
    )


def parse_header(data: bytes) -> Header:
    """The header of a sealed record, or MalformedCiphertext (never reads past the end)."""
    if len(data) < _MIN or data[:3] != MAGIC:
        raise MalformedCiphertext("not a Multihome sealed record (bad magic or too short)")
    if data[3] != FORMAT_VERSION:
        raise MalformedCiphertext(f"unknown envelope format version {data[3]} (this build reads {FORMAT_VERSION})")
    backend = BACKEND_NAMES.get(data[4])
    if backend is None:
        raise MalformedCiphertext(f"unknown KMS backend code {data[4]}")
    try:
        n = _U16.unpack_from(data, 5)[0]
        p = 7 + n
        kek_id = data[7:p].decode()
        n = data[p]
        version = data[p + 1 : p + 1 + n].decode()
        p += 1 + n
        n = data[p]
        dek = data[p + 1 : p + 1 + n].decode("ascii")
        p += 1 + n
    except (IndexError, UnicodeDecodeError, struct.error):
        raise MalformedCiphertext("truncated or garbled envelope header") from None
    if len(data) < p + NONCE_BYTES + TAG_BYTES or not dek:
        raise MalformedCiphertext("truncated envelope (no room for nonce and tag)")
    return Header(backend, kek_id, version, dek, p)


def stored_bytes(value: object) -> bytes:
    """A sealed column's value as stored: bytes; anything else (SQLite keeps text in a blob column) is no
    envelope, so opening it raises MalformedCiphertext (the row's problem: a 409 naming it) instead of a
    TypeError (a 500) at `bytes(value)`."""
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""


def length_prefixed(value: str) -> bytes:
    raw = value.encode()
    return _U32.pack(len(raw)) + raw


_lp = length_prefixed


def binding(tenant: str, purpose: str, table: str, record_id: str) -> bytes:
    """The part of the associated data that names where the record lives."""
    return _place(tenant, purpose, table) + _lp(record_id)


def binding_prefix(tenant: str, purpose: str, table: str) -> bytes:
    """`binding` without the record id: the same for every record of one table of one tenant."""
    return _place(tenant, purpose, table)


@functools.lru_cache(maxsize=4096)
def _place(tenant: str, purpose: str, table: str) -> bytes:
    # The same for every record of a table of one tenant: built once (a chain opens hundreds in a row).
    return b"".join((_AAD_PREFIX, _lp(tenant), _lp(purpose), _lp(table)))
