"""Minimal views of upstream responses: only what the gateway must read from a pass-through body."""

from __future__ import annotations

import msgspec

from .bounded import Decoder, decode


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class CompletionDetails(msgspec.Struct):
    """`completion_tokens_details` (chat) or `output_tokens_details` (Responses): the reasoning part."""

    reasoning_tokens: int | None = None


class Usage(msgspec.Struct):
    """Chat usage; a Responses API body's (`input_tokens`, `output_tokens`) reads as the same counts."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: PromptDetails | None = None
    output_tokens_details: CompletionDetails | None = None

    def __post_init__(self) -> None:
        if self.input_tokens is not None or self.output_tokens is not None:
            self.prompt_tokens = self.prompt_tokens or self.input_tokens or 0
            self.completion_tokens = self.completion_tokens or self.output_tokens or 0
            self.total_tokens = self.total_tokens or self.prompt_tokens + self.completion_tokens
            if self.prompt_tokens_details is None:
                self.prompt_tokens_details = self.input_tokens_details
            if self.completion_tokens_details is None:
                self.completion_tokens_details = self.output_tokens_details

    @property
    def reasoning_tokens(self) -> int:
        """The reasoning part of completion_tokens: within it whatever the upstream claims."""
        # min(max(claimed, 0), max(completion_tokens, 0)), in comparisons: min and max parse their
        # keywords on every call, and this runs for every metered call (accounting/tracker.py _usage).
        details = self.completion_tokens_details
        if details is None:
            return 0
        claimed = details.reasoning_tokens
        if not claimed or claimed < 0:
            return 0
        completion = self.completion_tokens
        if claimed <= completion:
            return claimed
        return completion if completion > 0 else 0


class FunctionPeek(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None  # output the model wrote: counted for an estimate when no usage comes


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


def arguments_chars(calls: list[ToolCallPeek]) -> int:
    """The characters of the tool calls' arguments (a stream chunk's pieces, or a whole answer's)."""
    total = 0
    for call in calls:
        function = call.function
        if function is not None and function.arguments:
            total += len(function.arguments)
    return total


class OutputItemPeek(msgspec.Struct):
    """A Responses API output item: what a function call it starts names."""

    type: str = ""
    name: str | None = None
    call_id: str | None = None

    def call(self) -> list[tuple[str, str]]:
        return [(self.name or "", self.call_id)] if self.type == "function_call" and self.call_id else []


class ResponseObjectPeek(msgspec.Struct):
    """The `response` of a Responses API stream event (its usage, on the terminal event)."""

    usage: Usage | None = None


class ResponsePeek(msgspec.Struct):
    """A chat completion, a stream chunk, an embeddings response, or a Responses API body or event, read
    shallowly."""

    choices: list[ChoicePeek] = []
    usage: Usage | None = None
    response: ResponseObjectPeek | None = None
    type: str = ""  # a Responses API stream event's type
    item: OutputItemPeek | None = None  # the item a Responses API `response.output_item.*` event carries
    output: list[OutputItemPeek] = []  # a Responses API body's output items
    error: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)
    prompt_filter_results: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)
    # A Responses API stream's `*.delta` event's piece (text, a call's arguments, a summary): output, counted
    # for an estimate when the stream ends before its usage. Raw: read as it is, whatever an upstream sends.
    delta: msgspec.Raw = msgspec.Raw()

    def tool_calls(self) -> list[tuple[str, str]]:
        """(name, id) of the tool calls this body or chunk starts (stream fragments without an id are skipped)."""
        out = []
        for choice in self.choices:
            part = choice.message or choice.delta
            for call in (part.tool_calls or ()) if part is not None else ():
                if call.id:
                    out.append((call.function.name if call.function and call.function.name else "", call.id))
        for item in self.output:  # a Response object (a native Responses API call)
            out += item.call()
        return out

    def content_chars(self) -> int:
        """The characters of output the answer holds (its text, its tool calls' arguments), for an estimate."""
        total = 0
        for choice in self.choices:
            part = choice.message or choice.delta
            if part is not None:
                if part.content:
                    total += len(part.content)
                if part.tool_calls:
                    total += arguments_chars(part.tool_calls)
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


def string_arguments(body: bytes) -> bytes | None:
    """`body` (a chat completion or stream chunk) with each tool call's `arguments` that is a JSON object or
    array written as the JSON string OpenAI's schema has there, or None when it holds none (or is not JSON).

    Some OpenAI-compatible servers (vLLM, some Azure builds) send the object itself; clients parse a string,
    and the peek above refuses anything else (the answer was `malformed_response`). Called only after the peek
    refused a body: an answer the peek takes costs nothing more."""
    try:
        doc = decode(body)
    except msgspec.DecodeError:
        return None
    changed = False
    choices = doc.get("choices") if isinstance(doc, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        for part in (choice.get("message"), choice.get("delta")) if isinstance(choice, dict) else ():
            calls = part.get("tool_calls") if isinstance(part, dict) else None
            for call in calls if isinstance(calls, list) else ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), (dict, list)):
                    function["arguments"] = msgspec.json.encode(function["arguments"]).decode()
                    changed = True
    return msgspec.json.encode(doc) if changed else None


def mended_peek(body: bytes, refused: msgspec.DecodeError) -> tuple[bytes, ResponsePeek]:
    """After peek_decoder refused `body` (`refused`): the body with its tool calls' object arguments as strings
    (string_arguments) and its peek; else raises `refused` (or the mended body's own DecodeError)."""
    mended = string_arguments(body) if isinstance(refused, msgspec.ValidationError) else None
    if mended is None:
        raise refused
    return mended, peek_decoder.decode(mended)
