"""JSON decoders for bytes from outside (upstream answers, stream events, error bodies) whose
too-deep input is an ordinary `msgspec.DecodeError`.

msgspec recurses on the C stack and raises RecursionError, not DecodeError, for input nested
deeper than the interpreter's limit (~1000 levels, less the caller's depth). Every reader of
upstream bytes already treats DecodeError as "malformed" (fail over, error event, 502); with
these decoders the same handlers cover nesting too, so a hostile upstream cannot turn a
malformed answer into an unhandled exception. One extra Python call per decode.
"""

from __future__ import annotations

from typing import Any

import msgspec

TOO_DEEP = "JSON is nested too deeply"


class Decoder:
    """`msgspec.json.Decoder(type)` with the same `decode`, nesting included in DecodeError."""

    __slots__ = ("_decoder",)

    def __init__(self, type: Any = Any) -> None:
        self._decoder = msgspec.json.Decoder(type)

    def decode(self, data: bytes | str) -> Any:
        try:
            return self._decoder.decode(data)
        except RecursionError:
            raise msgspec.DecodeError(TOO_DEEP) from None


_any = Decoder()


def decode(data: bytes | str) -> Any:
    """`msgspec.json.decode(data)` (untyped), nesting included in DecodeError."""
    return _any.decode(data)
