"""The Responses API spoken natively to an upstream that serves it (OpenAI, Azure): the stream decoder.

A native Responses stream is passed on event by event, untranslated, with two exceptions that let
the attempt loop and the stream relay treat it like every other stream (reference/responses.md §7):
the upstream's `response.created` / `response.in_progress` / `response.queued` are dropped (the
gateway's door sends its own, naming the gateway's response id), so the relay's "first output"
is the first real output event and a stream that dies before it still fails over; and the
stream's end, which the Responses API marks with its terminal event rather than `[DONE]`, is
followed by `[DONE]`. An `error` event, or a `response.failed`, also carries a top-level `error`
object, which is how the relay recognises an upstream error event in any stream.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .sse import DONE, SseSplitter

_encode = msgspec.json.encode
_SKIP = frozenset({b"response.created", b"response.in_progress", b"response.queued"})
_TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})


class _Event(msgspec.Struct):
    type: str = ""


_event = msgspec.json.Decoder(_Event)
_any = msgspec.json.Decoder(dict[str, Any])


class ResponsesStreamDecoder:
    """Upstream Responses SSE bytes in; the event payloads (and a final `[DONE]`) out."""

    __slots__ = ("_split", "_over")

    def __init__(self) -> None:
        self._split = SseSplitter()
        self._over = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for payload in self._split.feed(data):
            if self._over:
                break
            try:
                kind = _event.decode(payload).type.encode()
            except msgspec.DecodeError as exc:
                raise ValueError(f"a Responses event that is not a JSON object ({exc})") from None
            if kind in _SKIP:
                continue
            if kind == b"error" or kind == b"response.failed":
                out.append(_with_error(payload))
            else:
                out.append(payload)
            if kind in _TERMINAL or kind == b"error":
                self._over = True
                out.append(DONE)
        return out

    def end(self) -> list[bytes]:
        return []


def _with_error(payload: bytes) -> bytes:
    event = _any.decode(payload)
    failed = event.get("response") if event.get("type") == "response.failed" else None
    detail = (failed or {}).get("error") if isinstance(failed, dict) else event
    detail = detail if isinstance(detail, dict) else {}
    event["error"] = {
        "message": str(detail.get("message") or "The upstream reported an error."),
        "type": "server_error",
        "param": detail.get("param"),
        "code": detail.get("code"),
    }
    return _encode(event)
