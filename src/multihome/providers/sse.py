"""Server-sent events framing: split a byte stream into `data:` payloads, frame payloads back."""

from __future__ import annotations

DONE = b"[DONE]"


class SseSplitter:
    """Feed raw network chunks; get back the data payloads of every complete event.

    Also the StreamDecoder of pass-through adapters, whose upstream already speaks OpenAI SSE.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        if buf.find(b"\r") >= 0:  # find, not `in`: see _data_of
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._buf = events.pop()
        out = []
        for event in events:
            payload = _data_of(event)
            if payload is not None:
                out.append(payload)
        return out

    def end(self) -> list[bytes]:
        return []


def _data_of(event: bytes) -> bytes | None:
    """Join the event's data lines (comments and other fields are ignored, per the SSE spec)."""
    # find, not `in`: on 3.11 `bytes in bytes` first tries the operand as an integer, formatting and
    # clearing a TypeError (~1,800 instructions) per event.
    if event.startswith(b"data:") and event.find(b"\n") < 0:
        return event[5:].lstrip(b" ")
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
