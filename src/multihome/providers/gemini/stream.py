"""Gemini `streamGenerateContent?alt=sse` -> OpenAI `chat.completion.chunk` payloads."""

from __future__ import annotations

import msgspec

from ...schema.peek import Usage
from .. import openai_out as out
from ..sse import DONE, SseSplitter
from .response import CallIds, UsageMetadata, args_text, block_message, decode, finish_reason, usage_of


class GeminiStreamDecoder:
    """`streamGenerateContent?alt=sse` bytes in, OpenAI chunk payloads out.

    Every SSE event is a whole response chunk. A function call arrives whole, so it becomes one
    `tool_start` and one `tool_args` with the full JSON; indices count calls across chunks.
    Gemini sends no end sentinel: `[DONE]` is emitted at EOF only when a finishReason was seen,
    so a stream cut short stays incomplete and the relay reports it.
    """

    def __init__(self, model: str) -> None:
        self._sse = SseSplitter()
        self._writer: out.ChunkWriter | None = None
        self._model = model
        self._ids: CallIds | None = None
        self._calls = 0
        self._finished = False
        self._usage: UsageMetadata | None = None
        self.start_usage: Usage | None = None  # the prompt's usage as the first chunk tells it
        self._pending: ValueError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        self._raise_pending()
        payloads: list[bytes] = []
        for event in self._sse.feed(data):
            try:
                payloads.extend(self._event(event))
            except ValueError as exc:
                if not payloads:
                    raise
                # Hand over the good events that came before the corrupt one; fail on the next call.
                self._pending = exc
                break
        return payloads

    def _raise_pending(self) -> None:
        if self._pending is not None:
            raise self._pending

    def end(self) -> list[bytes]:
        self._raise_pending()
        if not self._finished:
            return []
        writer = self._writer_for(None)
        return [writer.usage(usage_of(self._usage)), DONE]

    def _writer_for(self, response_id: str | None) -> out.ChunkWriter:
        if self._writer is None:
            self._writer = out.ChunkWriter(self._model)
            self._ids = CallIds(response_id)
        return self._writer

    def _event(self, payload: bytes) -> list[bytes]:
        chunk = decode(payload)  # DecodeError is a ValueError: the relay reports a corrupt stream
        if chunk.error is not None:
            err = chunk.error
            return [
                msgspec.json.encode(
                    {
                        "error": {
                            "message": err.message or "upstream error",
                            "type": "server_error",
                            "param": None,
                            "code": (err.status or "upstream_error").lower(),
                        }
                    }
                )
            ]
        if self._finished:
            # Only a trailing usage update may follow the finish.
            if chunk.usageMetadata is not None:
                self._usage = chunk.usageMetadata
            return []
        first = self._writer is None
        writer = self._writer_for(chunk.responseId)
        emitted = []
        if first:
            emitted.append(writer.role())
            if chunk.usageMetadata is not None:  # Gemini counts the prompt in every chunk, the first too
                self.start_usage = usage_of(chunk.usageMetadata).counted()  # (the Anthropic door's message_start)
        if chunk.usageMetadata is not None:
            self._usage = chunk.usageMetadata
        if not chunk.candidates:
            feedback = chunk.promptFeedback
            if feedback is not None and feedback.blockReason:
                emitted += [writer.refusal(block_message(feedback)), writer.finish(out.FINISH_FILTER)]
                self._finished = True
            return emitted
        cand = chunk.candidates[0]  # streams are single-candidate (n > 1 is refused)
        for part in cand.content.parts if cand.content else ():
            if part.functionCall is not None:
                fc = part.functionCall
                index = self._calls
                self._calls += 1
                assert self._ids is not None  # set with the writer
                call_id = self._ids.id_for(fc, 0, index)
                emitted.append(writer.tool_start(index, call_id, fc.name, part.thoughtSignature))
                emitted.append(writer.tool_args(index, args_text(fc)))
            elif part.text and part.thought:
                emitted.append(writer.reasoning(part.text))  # a thought summary: delta.reasoning_content
            elif part.text:
                emitted.append(writer.text(part.text))
        if cand.finishReason:
            emitted.append(writer.finish(finish_reason(cand.finishReason, self._calls > 0)))
            self._finished = True
        return emitted
