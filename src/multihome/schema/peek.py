"""Minimal views of upstream responses: only what the gateway must read from a pass-through body."""

from __future__ import annotations

import msgspec


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptDetails | None = None


class ChoicePeek(msgspec.Struct):
    finish_reason: str | None = None


class ResponsePeek(msgspec.Struct):
    """A chat completion, a stream chunk or an embeddings response, read shallowly."""

    choices: list[ChoicePeek] = []
    usage: Usage | None = None
    error: msgspec.Raw | None = None
    prompt_filter_results: msgspec.Raw | None = None


peek_decoder = msgspec.json.Decoder(ResponsePeek)
