"""Minimal views of upstream responses: only what the gateway must read from a pass-through body."""

from __future__ import annotations

import msgspec

from .bounded import Decoder


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptDetails | None = None


class FunctionPeek(msgspec.Struct):
    name: str | None = None


class ToolCallPeek(msgspec.Struct):
    id: str | None = None
    function: FunctionPeek | None = None


class DeltaPeek(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallPeek] | None = None


class MessagePeek(msgspec.Struct):
    content: str | None = None
    tool_calls: list[ToolCallPeek] | None = None


class ChoicePeek(msgspec.Struct):
    finish_reason: str | None = None
    delta: DeltaPeek | None = None
    message: MessagePeek | None = None


class ResponsePeek(msgspec.Struct):
    """A chat completion, a stream chunk or an embeddings response, read shallowly."""

    choices: list[ChoicePeek] = []
    usage: Usage | None = None
    error: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)
    prompt_filter_results: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)

    def tool_calls(self) -> list[tuple[str, str]]:
        """(name, id) of the tool calls this body or chunk starts (stream fragments without an id are skipped)."""
        out = []
        for choice in self.choices:
            part = choice.message or choice.delta
            for call in (part.tool_calls or ()) if part is not None else ():
                if call.id:
                    out.append((call.function.name if call.function and call.function.name else "", call.id))
        return out

    def content_chars(self) -> int:
        total = 0
        for choice in self.choices:
            part = choice.message or choice.delta
            if part is not None and part.content:
                total += len(part.content)
        return total

    @property
    def is_preamble(self) -> bool:
        """A stream chunk that only opens the assistant turn (role, empty content): nothing produced yet."""
        for choice in self.choices:
            d = choice.delta
            if choice.finish_reason or d is None or d.content or d.refusal or d.tool_calls:
                return False
        return bool(self.choices) and self.usage is None

    @property
    def has_error(self) -> bool:
        return len(self.error) > 0 and bytes(self.error) != b"null"


peek_decoder = Decoder(ResponsePeek)
