"""Refuse a request body of too many JSON values from its bytes, before any decoder reads it whole.

Every decoder call over a body (the top-level fields, the typed decode, a count of an array) holds the GIL,
so the event loop, for as long as the body has values: a flat array of ~9,000,000 token ids (`[1,1,...]`, a
17 MiB embeddings body) took the typed decode ~110 ms, and merely skipping it (the top-level view) ~40 ms;
6,000,000 empty `stop` strings ~80 ms; ~700,000 tiny content parts ~80 ms in the call that counted them. A
pool thread does not help: msgspec never lets go of the GIL in a call (docs/hostile-input.md).

So a body over SCAN_OVER bytes is scanned first, here, in short slices (~0.1-0.5 ms each: the loop waits for
one slice, not the body), counting the marks that begin a value or separate two (`,` `[` `{`) outside
strings. Every element of an array and member of an object (a key and its value) but the first follows a
`,`, and the first follows its array's `[` or object's `{`, so a body's elements and members together are at
most its marks. A body of more than
MAX_VALUES marks is refused (413) as soon as the scan has seen them, before any decode; a body of no more
holds each decoder call after it to ~7-14 ms (a flat array of ints; of empty strings). The largest arrays OpenAI takes fit far within: 2,048
embedding inputs of 300,000 tokens in all, 10,000 items or parts (bounds.py). A body of fewer bytes than
MAX_VALUES cannot hold more marks: it is not scanned.

Strings are skipped, not parsed: after `\\\\` pairs and then `\\"` are removed (JSON's escapes pair from
the left, as `bytes.replace` does), every `"` left opens or closes a string, and what lies between the
closes and the opens is outside them. A slice that would end inside a run of backslashes ends after an even
number of them (or one byte later), so an escape is never split and a slice pairs them as the body does.
Text costs one memchr per slice (~2 ms for 19 MiB); escape-heavy text (JSON inside a string) ~4 ns a
byte, on the pool thread that decodes the body.
"""

from __future__ import annotations

from typing import Final

import msgspec

from .errors import ApiError

MAX_VALUES: Final = 500_000
SCAN_OVER: Final = MAX_VALUES  # bytes: a body this short holds no more marks than bytes
SLICE: Final = 64 * 1024
_BACKSLASH: Final = 92


def marks(body: bytes, most: int = MAX_VALUES) -> int:
    """The `,` `[` `{` outside strings in `body`, counted until they pass `most` (then a number above it)."""
    size = len(body)
    pos = 0
    inside = False  # whether the slice begins inside a string
    total = 0
    while pos < size and total <= most:
        end = min(pos + SLICE, size)
        piece = body[pos:end]
        if end < size and piece[-1] == _BACKSLASH:
            # A slice ends in a run of backslashes: after an odd number of them (counted from the run's start,
            # or from this slice's start, itself cut on a pair's boundary) it takes one byte more, the last
            # escape's second, so that every escape in it is whole and the next slice begins on a boundary.
            # Never to the run's end: a body of one run of backslashes was one piece (~20 ms a MiB).
            if (len(piece) - len(piece.rstrip(b"\\"))) % 2:
                end += 1
                piece = body[pos:end]
        pos = end
        if b'"' not in piece:
            if not inside:
                total += _count(piece)
            continue
        if b"\\" in piece:
            if b"\\\\" in piece:
                piece = piece.replace(b"\\\\", b"")
            escaped = piece.count(b'\\"')
            if escaped == piece.count(b'"'):  # every quote escaped: within one string (or outside, as it was)
                if not inside:
                    total += _count(piece)
                continue
            if escaped:
                piece = piece.replace(b'\\"', b"")
        strings = piece.split(b'"')
        total += _count(b"".join(strings[1::2] if inside else strings[::2]))
        if len(strings) % 2 == 0:  # an odd number of quotes: the slice ends on the other side
            inside = not inside
    return total


def _count(piece: bytes) -> int:
    return piece.count(b",") + piece.count(b"[") + piece.count(b"{")


def check_values(body: bytes | msgspec.Raw, most: int = MAX_VALUES) -> None:
    """Refuse `body` (413) if it holds more than `most` JSON values; a body of no more bytes is not looked at."""
    if len(body) > most and marks(body if isinstance(body, bytes) else bytes(body), most) > most:
        raise too_many_values(most)


_ADVICE: Final = (
    "Send fewer, larger values (join texts into one; split a batch of token ids: OpenAI's embeddings take at "
    "most 300,000 tokens in one request)."
)


def too_many_values(most: int = MAX_VALUES) -> ApiError:
    advice = _ADVICE if most == MAX_VALUES else "Send fewer values in one request."
    return ApiError(
        413,
        f"Request body holds more than {most:,} JSON values (numbers, strings, arrays and objects); this "
        f"gateway reads at most that many in one request. {advice}",
        code="too_many_values",
    )
