"""OpenAI chat-completion chunks (as the relay forwards them) -> Anthropic Messages SSE events.

Event order, as Anthropic documents it: message_start; per content block (text first, then
each tool_use) content_block_start, content_block_delta..., content_block_stop; message_delta
(stop_reason, cumulative usage); message_stop. An error event from the relay (the stream broke
after the client got its first byte) becomes `event: error`, which the anthropic SDK raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ...providers.sse import DONE, SseSplitter
from ...routing.stream_relay import StreamRelay
from ...schema.anthropic import MessagesRequest
from ...schema.chunks import Chunk, Failure, FnDelta, ThinkingDelta, ToolDelta, read_chunk
from ...schema.peek import Usage
from .translate import Json, message_id, stop_reason, usage_of

_encode = msgspec.json.encode


def event(name: str, payload: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(payload) + b"\n\n"


def error_event(message: str, kind: str = "api_error") -> bytes:
    return event("error", {"type": "error", "error": {"type": kind, "message": message}})


class AnthropicStream:
    """Feed the relay's SSE bytes; get Anthropic SSE bytes. One instance per response."""

    def __init__(self, req: MessagesRequest, start_usage: Usage | None = None) -> None:
        self._req = req
        self._start_usage = start_usage  # the prompt's usage, when the upstream told it at its stream's start
        self._split = SseSplitter()
        self._started = False
        self._open: int | None = None  # index of the block currently open (Anthropic: one at a time)
        self._open_text = False
        self._open_thinking = False
        self._next = 0
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> content block index
        self._finish: str | None = None
        self._matched: str | int | None = None
        self._refusal = False
        self._usage: Usage | None = None
        self.finished = False  # message_stop or error sent: nothing more may follow

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for payload in self._split.feed(data):
            if self.finished:
                break
            if payload == DONE:
                self._finish_message(out)
                continue
            chunk = read_chunk(payload)
            if isinstance(chunk, Failure):
                out.append(self._fail(chunk.message))
                continue
            self._chunk(chunk, out)
        return b"".join(out)

    def end(self) -> bytes:
        """The relay stopped. A stream that never finished must not look complete to the client."""
        if self.finished:
            return b""
        return self._fail("The stream ended before it was complete; the answer is incomplete. Retry the request.")

    def _fail(self, message: str) -> bytes:
        self.finished = True
        return error_event(message)

    def _chunk(self, chunk: Chunk, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            message: Json = {
                "id": message_id(chunk.id),
                "type": "message",
                "role": "assistant",
                "model": chunk.model or self._req.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                # The prompt's tokens when the upstream said them at its start (an Anthropic upstream's
                # message_start); OpenAI reports usage only in its last chunk: 0 here, the totals in message_delta.
                "usage": usage_of(chunk.usage or self._start_usage),
            }
            out.append(event("message_start", {"type": "message_start", "message": message}))
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices[:1]:  # the door never asks for n > 1
            delta = choice.delta
            if delta is not None:
                if delta.reasoning_content:
                    self._reasoning(delta.reasoning_content, out)
                for block in delta.thinking_blocks or ():
                    self._thinking_block(block, out)
                text = (delta.content or "") + (delta.refusal or "")
                if delta.refusal:
                    self._refusal = True
                if text:
                    self._text(text, out)
                for call in delta.tool_calls or ():
                    self._tool(call, out)
            if choice.finish_reason:
                self._finish = choice.finish_reason
                self._matched = choice.stop_reason
                self._close(out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open is None or not self._open_text:
            self._close(out)
            self._start({"type": "text", "text": ""}, out)
            self._open_text = True
        delta = {"type": "text_delta", "text": text}
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}))

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        if self._open is None or not self._open_thinking:
            self._close(out)
            self._start({"type": "thinking", "thinking": "", "signature": ""}, out)
            self._open_thinking = True
        delta = {"type": "thinking_delta", "thinking": text}
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}))

    def _thinking_block(self, block: ThinkingDelta, out: list[bytes]) -> None:
        """A finished block: its signature closes the thinking block streamed so far (or the whole
        block, when no reasoning text was streamed before it)."""
        if block.type == "redacted_thinking":
            self._close(out)
            self._start({"type": "redacted_thinking", "data": block.data or ""}, out)
            self._close(out)
            return
        if self._open is None or not self._open_thinking:
            self._reasoning(block.thinking or "", out)
        delta = {"type": "signature_delta", "signature": block.signature or ""}
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}))
        self._close(out)

    def _tool(self, call: ToolDelta, out: list[bytes]) -> None:
        fn = call.function or FnDelta()
        index = self._tools.get(call.index)
        if index is None:
            self._close(out)
            block = {"type": "tool_use", "id": call.id or f"toolu_gw_{self._next}", "name": fn.name or "", "input": {}}
            index = self._start(block, out)
            self._tools[call.index] = index
        if fn.arguments:
            delta = {"type": "input_json_delta", "partial_json": fn.arguments}
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def _start(self, block: Json, out: list[bytes]) -> int:
        index = self._next
        self._next += 1
        self._open, self._open_text, self._open_thinking = index, False, False
        out.append(
            event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(event("content_block_stop", {"type": "content_block_stop", "index": self._open}))
            self._open, self._open_text, self._open_thinking = None, False, False

    def _finish_message(self, out: list[bytes]) -> None:
        self._close(out)
        finish = self._finish
        if self._refusal and finish in (None, "stop"):
            finish = "content_filter"
        reason, sequence = stop_reason(finish, self._matched, self._req.stop_sequences)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage_of(self._usage),
        }
        out.append(event("message_delta", delta))
        out.append(event("message_stop", {"type": "message_stop"}))
        self.finished = True


class TranslatedRelay:
    """Wraps a StreamRelay so the OpenAI stream sender forwards Anthropic events instead.

    Same `rest()`/`close()` surface, so the disconnect watcher and upstream cancellation of
    the OpenAI door are reused unchanged.
    """

    def __init__(self, relay: StreamRelay, converter: AnthropicStream) -> None:
        self._relay = relay
        self._converter = converter

    async def rest(self) -> AsyncIterator[bytes]:
        async for piece in self._relay.rest():
            out = self._converter.feed(piece)
            if out:
                yield out
        tail = self._converter.end()
        if tail:
            yield tail

    def close(self) -> None:
        self._relay.close()

    def __getattr__(self, name: str) -> Any:
        # usage, finish_reasons, events, error...: whoever meters the stream reads the real relay.
        return getattr(self._relay, name)
