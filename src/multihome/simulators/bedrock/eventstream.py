"""Encode AWS event-stream frames (application/vnd.amazon.eventstream), as Bedrock sends them.

    [total_len u32][headers_len u32][prelude_crc u32][headers][payload][message_crc u32]

Big-endian; prelude_crc = CRC32 of the first 8 bytes; message_crc = CRC32 of everything before
it. Only string headers (type 7) are needed. Tests decode these with botocore's parser.
"""

from __future__ import annotations

import struct
import zlib

import msgspec

_STRING = 7
_encode = msgspec.json.encode


def _header(name: str, value: str) -> bytes:
    n = name.encode()
    v = value.encode()
    return struct.pack(">B", len(n)) + n + struct.pack(">BH", _STRING, len(v)) + v


def frame(headers: list[tuple[str, str]], payload: bytes, *, corrupt: bool = False) -> bytes:
    """One frame; `corrupt=True` flips the message CRC (what the `malformed_at` knob sends)."""
    block = b"".join(_header(k, v) for k, v in headers)
    total = 12 + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + block + payload
    crc = zlib.crc32(body)
    if corrupt:
        crc ^= 0xFFFFFFFF
    return body + struct.pack(">I", crc)


def event(event_type: str, payload: dict, *, corrupt: bool = False) -> bytes:
    return frame(
        [(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")],
        _encode(payload),
        corrupt=corrupt,
    )


def exception(exception_type: str, message: str) -> bytes:
    return frame(
        [(":exception-type", exception_type), (":content-type", "application/json"), (":message-type", "exception")],
        _encode({"message": message}),
    )
