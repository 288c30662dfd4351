"""Anthropic Messages SSE -> OpenAI chat.completion.chunk payloads, event by event.

Anthropic numbers content blocks across text and tool_use (a text block at index 0 makes the
first tool block index 1); OpenAI numbers tool calls alone from 0. The decoder keeps the map.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from ...schema.bounded import Decoder
from ...schema.peek import Usage
from ..openai_out import FINISH_STOP, ChunkWriter
from ..sse import DONE, SseSplitter
from .request import JSON_TOOL
from .response import Usage as MessagesUsage
from .response import completion_id, finish_reason, usage_out


class _Block(msgspec.Struct):
    type: str = ""
    id: str | None = None
    name: str | None = None
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    thinking: str | None = None
    signature: str | None = None


class _Message(msgspec.Struct):
    id: str = ""
    model: str | None = None
    usage: MessagesUsage | None = None


class _Error(msgspec.Struct):
    type: str = "api_error"
    message: str = "upstream stream error"


class _Event(msgspec.Struct):
    type: str
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: MessagesUsage | None = None
    error: _Error | None = None


_event = Decoder(_Event)
_encode = msgspec.json.encode
_TEXT, _TOOL, _JSON, _OTHER, _THINKING = 0, 1, 2, 3, 4


class AnthropicStreamDecoder:
    def __init__(self, upstream_model: str) -> None:
        self._sse = SseSplitter()
        self._model = upstream_model
        self._out: ChunkWriter | None = None
        self._blocks: dict[int, tuple[int, int]] = {}  # anthropic block index -> (kind, openai tool index)
        self._tools = 0
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None  # the one that matched, said with stop_reason "stop_sequence"
        self._json_mode = False
        self._thinking: dict[int, list[str]] = {}  # open thinking block -> [text so far, signature]
        self._input = self._output = self._cache_read = self._cache_creation = self._thinking_tokens = 0
        # The prompt's usage as message_start reports it, in OpenAI's terms (cache reads and writes within the
        # prompt): the Anthropic door's own message_start carries it (api/anthropic/stream.py).
        self.start_usage: Usage | None = None
        self.done = False
        self._corrupt = ""

    def feed(self, data: bytes) -> list[bytes]:
        if self._corrupt:
            raise ValueError(self._corrupt)
        return self.feed_events(self._sse.feed(data))

    def feed_events(self, payloads: Iterable[bytes]) -> list[bytes]:
        """Messages events already taken out of their framing (SSE here; Bedrock's event-stream
        `chunk`s for InvokeModelWithResponseStream) -> chunk payloads."""
        if self._corrupt:
            raise ValueError(self._corrupt)
        out: list[bytes] = []
        for payload in payloads:
            if self.done:
                break
            try:
                event = _event.decode(payload)
            except msgspec.DecodeError as exc:
                self._corrupt = f"Anthropic stream event is not valid JSON ({exc})"
                if not out:
                    raise ValueError(self._corrupt) from None
                # What decoded before the bad event is good: deliver it, fail on the next call.
                break
            self._on(event, out)
        return out

    def end(self) -> list[bytes]:
        if self._corrupt:
            raise ValueError(self._corrupt)
        return []  # no message_stop: the relay reports an interrupted stream

    def _writer(self, model: str | None = None, message_id: str = "") -> ChunkWriter:
        if self._out is None:
            self._out = ChunkWriter(model or self._model, completion_id(message_id))
        return self._out

    def _usage(self, usage: MessagesUsage | None) -> None:
        # message_start carries the input side; message_delta carries cumulative totals.
        if usage is None:
            return
        if usage.input_tokens is not None:
            self._input = usage.input_tokens
        if usage.output_tokens is not None:
            self._output = usage.output_tokens
        if usage.cache_read_input_tokens is not None:
            self._cache_read = usage.cache_read_input_tokens
        if usage.cache_creation_input_tokens is not None:
            self._cache_creation = usage.cache_creation_input_tokens
        if usage.thinking_tokens is not None:
            self._thinking_tokens = usage.thinking_tokens

    def _on(self, ev: _Event, out: list[bytes]) -> None:
        kind = ev.type
        if kind == "content_block_delta":
            delta = ev.delta
            block_kind, tool_index = self._blocks.get(ev.index, (_OTHER, 0))
            if delta is None:
                return
            if delta.type == "text_delta" and block_kind == _TEXT and delta.text:
                out.append(self._writer().text(delta.text))
            elif delta.type == "thinking_delta" and block_kind == _THINKING and delta.thinking:
                self._thinking[ev.index][0] += delta.thinking
                out.append(self._writer().reasoning(delta.thinking))
            elif delta.type == "signature_delta" and block_kind == _THINKING and delta.signature:
                self._thinking[ev.index][1] += delta.signature
            elif delta.type == "input_json_delta" and delta.partial_json:
                if block_kind == _TOOL:
                    out.append(self._writer().tool_args(tool_index, delta.partial_json))
                elif block_kind == _JSON:
                    out.append(self._writer().text(delta.partial_json))
            # citations_delta: no OpenAI chat field.
        elif kind == "content_block_start":
            block = ev.content_block or _Block()
            if block.type == "text":
                self._blocks[ev.index] = (_TEXT, 0)
                if block.text:
                    out.append(self._writer().text(block.text))
            elif block.type == "thinking":
                self._blocks[ev.index] = (_THINKING, 0)
                self._thinking[ev.index] = [block.thinking or "", block.signature or ""]
                if block.thinking:
                    out.append(self._writer().reasoning(block.thinking))
            elif block.type == "redacted_thinking":
                self._blocks[ev.index] = (_OTHER, 0)
                out.append(self._writer().thinking_block({"type": "redacted_thinking", "data": block.data}))
            elif block.type == "tool_use" and block.name == JSON_TOOL:
                self._blocks[ev.index] = (_JSON, 0)
                self._json_mode = True
            elif block.type == "tool_use":
                index = self._tools
                self._tools += 1
                self._blocks[ev.index] = (_TOOL, index)
                out.append(self._writer().tool_start(index, block.id or "", block.name or ""))
            else:
                self._blocks[ev.index] = (_OTHER, 0)
        elif kind == "content_block_stop" and ev.index in self._thinking:
            # The block is whole (its signature arrives last): the client keeps it for the next turn.
            text, signature = self._thinking.pop(ev.index)
            self._blocks[ev.index] = (_OTHER, 0)  # sent whole: a delta to it after its stop is ignored
            out.append(self._writer().thinking_block({"type": "thinking", "thinking": text, "signature": signature}))
        elif kind == "message_start":
            msg = ev.message or _Message()
            self._usage(msg.usage)
            if msg.usage is not None:
                counts = (self._input, self._output, self._cache_read, self._cache_creation, self._thinking_tokens)
                self.start_usage = usage_out(*counts).counted()
            out.append(self._writer(msg.model, msg.id).role())
        elif kind == "message_delta":
            if ev.delta is not None and ev.delta.stop_reason is not None:
                self._stop_reason = ev.delta.stop_reason
                self._stop_sequence = ev.delta.stop_sequence
            self._usage(ev.usage)
        elif kind == "message_stop":
            w = self._writer()
            reason = FINISH_STOP if self._json_mode else finish_reason(self._stop_reason)
            out.append(w.finish(reason, None if self._json_mode else self._stop_sequence))
            counts = (self._input, self._output, self._cache_read, self._cache_creation, self._thinking_tokens)
            out.append(w.usage(usage_out(*counts)))
            out.append(DONE)
            self.done = True
        elif kind == "error":
            err = ev.error or _Error()
            # An `error` key makes the relay end the stream and the OpenAI SDK raise it.
            out.append(
                _encode(
                    {
                        "error": {
                            "message": f"Anthropic stream error ({err.type}): {err.message}",
                            "type": "server_error",
                            "param": None,
                            "code": err.type,
                        }
                    }
                )
            )
            self.done = True
        # ping, other content_block_stops and unknown future events carry nothing to forward.
