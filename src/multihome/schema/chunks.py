"""One OpenAI chat-completion chunk as the front doors that translate streams read it (the Anthropic
door, the Responses door): the delta's text, refusal and tool-call fragments, the finish reason,
usage, and an error event's message. Decoded once per chunk; unknown fields are skipped."""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from .bounded import Decoder
from .peek import Usage


class FnDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: FnDelta | None = None


class ThinkingDelta(msgspec.Struct):
    type: str = "thinking"
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolDelta] | None = None
    reasoning_content: str | None = None  # not OpenAI's: docs/translation/reasoning.md
    thinking_blocks: list[ThinkingDelta] | None = None  # a finished block with its signature


class ChunkChoice(msgspec.Struct):
    delta: Delta | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string that matched


class ChunkError(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None


class Chunk(msgspec.Struct):
    id: str | None = None  # null from some OpenAI-compatible servers
    model: str = ""
    choices: list[ChunkChoice] = []
    usage: Usage | None = None
    error: ChunkError | str | None = None
    service_tier: str | None = None  # the tier the answer was processed at (OpenAI's chunks each carry it)


chunk_decoder = Decoder(Chunk)


class Failure(NamedTuple):
    """A chunk that ends the stream: an upstream error event, or bytes the gateway could not read."""

    message: str
    code: str | None = None


def read_chunk(payload: bytes) -> Chunk | Failure:
    """One SSE payload (not `[DONE]`) as a chunk, or the failure it reports."""
    try:
        chunk: Chunk = chunk_decoder.decode(payload)
    except msgspec.DecodeError:
        # The relay validates JSON before forwarding; anything else is a gateway bug worth surfacing.
        return Failure("The gateway could not read a chunk of the upstream stream; the answer is incomplete.")
    err = chunk.error
    if err is None:
        return chunk
    if isinstance(err, str):
        return Failure(err)
    return Failure(err.message or "The upstream stream failed.", None if err.code is None else str(err.code))
