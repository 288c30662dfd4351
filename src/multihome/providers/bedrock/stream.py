"""ConverseStream (binary AWS event-stream) -> OpenAI chat.completion.chunk payloads.

Frames are parsed by botocore's own `EventStreamBuffer` (prelude and message CRCs checked);
a corrupt frame becomes ValueError, which the relay turns into a clean client error or, before
the first byte, a failover.
"""

from __future__ import annotations

from typing import Any

import msgspec
from botocore.eventstream import EventStreamBuffer

from ...schema.bounded import Decoder
from ..aws import stream_error_payload
from ..openai_out import ChunkWriter
from ..sse import DONE
from .response import Usage, finish_reason

_decode = msgspec.json.decode
_encode = msgspec.json.encode


class _ToolStart(msgspec.Struct):
    toolUseId: str
    name: str


class _Start(msgspec.Struct):
    toolUse: _ToolStart | None = None


class _ToolDelta(msgspec.Struct):
    input: str = ""


class _ReasoningDelta(msgspec.Struct):
    text: str | None = None
    signature: str | None = None
    redactedContent: str | None = None


class _Delta(msgspec.Struct):
    text: str | None = None
    toolUse: _ToolDelta | None = None
    reasoningContent: _ReasoningDelta | None = None


class _Event(msgspec.Struct):
    """The members of every ConverseStream event this decoder reads (others are ignored)."""

    contentBlockIndex: int = 0
    start: _Start | None = None
    delta: _Delta | None = None
    stopReason: str | None = None
    usage: Usage | None = None
    message: str | None = None  # exception events


_event = Decoder(_Event)


class ConverseStreamDecoder:
    __slots__ = ("_buf", "_out", "_tools", "_finished", "_done", "_thinking")

    def __init__(self, model: str) -> None:
        self._buf = EventStreamBuffer()
        self._out = ChunkWriter(model)
        self._tools: dict[int, int] = {}  # contentBlockIndex -> OpenAI tool_calls index
        self._finished = False
        self._done = False
        self._thinking: dict[int, list[str]] = {}  # contentBlockIndex -> [reasoning text, signature]

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            self._buf.add_data(data)
            for message in self._buf:
                if not self._done:
                    # botocore-stubs say `headers: int`; botocore sets the parsed header dict
                    self._message(message.headers, message.payload, out)  # type: ignore[arg-type]
        except ValueError:
            raise
        except Exception as exc:  # botocore's ParserError family: CRC mismatch, bad lengths, bad headers
            raise ValueError(f"invalid AWS event-stream frame: {type(exc).__name__}") from None
        return out

    def end(self) -> list[bytes]:
        if self._finished and not self._done:
            self._done = True
            return [DONE]
        return []  # no messageStop: the relay reports the stream as interrupted

    def _message(self, headers: dict[str, Any], payload: bytes, out: list[bytes]) -> None:
        kind = headers.get(":message-type")
        if kind != "event":
            name = headers.get(":exception-type") or headers.get(":error-code") or "error"
            text = headers.get(":error-message") or ""
            if kind == "exception":
                try:
                    text = _event.decode(payload).message or text
                except msgspec.DecodeError:
                    pass
            self._done = True
            out.append(stream_error_payload(str(name), str(text)))
            return
        name = headers.get(":event-type")
        try:
            ev = _event.decode(payload)
        except msgspec.DecodeError as exc:
            raise ValueError(f"event {name} has an unreadable payload ({exc})") from None
        w = self._out
        if name == "contentBlockDelta":
            d = ev.delta
            if d is None:
                return
            if d.reasoningContent is not None:
                r = d.reasoningContent
                if r.redactedContent is not None:
                    out.append(w.thinking_block({"type": "redacted_thinking", "data": r.redactedContent}))
                    return
                held = self._thinking.setdefault(ev.contentBlockIndex, ["", ""])
                if r.text:
                    held[0] += r.text
                    out.append(w.reasoning(r.text))
                if r.signature:
                    held[1] += r.signature
            elif d.text:
                out.append(w.text(d.text))
            elif d.toolUse is not None:
                index = self._tools.get(ev.contentBlockIndex)
                if index is None:
                    raise ValueError(
                        f"tool input for content block {ev.contentBlockIndex} before its contentBlockStart"
                    )
                if d.toolUse.input:
                    out.append(w.tool_args(index, d.toolUse.input))
        elif name == "contentBlockStart":
            if ev.start is not None and ev.start.toolUse is not None:
                index = len(self._tools)
                self._tools[ev.contentBlockIndex] = index
                out.append(w.tool_start(index, ev.start.toolUse.toolUseId, ev.start.toolUse.name))
        elif name == "messageStart":
            out.append(w.role())
        elif name == "messageStop":
            out.append(w.finish(finish_reason(ev.stopReason)))
            self._finished = True
        elif name == "metadata":
            if ev.usage is not None:
                out.append(w.usage(ev.usage.to_out()))
            if self._finished:
                self._done = True
                out.append(DONE)
        elif name == "contentBlockStop" and ev.contentBlockIndex in self._thinking:
            text, signature = self._thinking.pop(ev.contentBlockIndex)
            out.append(w.thinking_block({"type": "thinking", "thinking": text, "signature": signature}))
        # other contentBlockStops and unknown events carry nothing an OpenAI client needs.
