"""OpenAI chat-completions request, decoded once into typed structs.

The typed view is what routing and translation read; `raw` keeps every top-level field as
received (including ones this version does not model) so pass-through adapters forward
them untouched.
"""

from __future__ import annotations

import msgspec

from .bounds import (
    INT64,
    LOGIT_BIAS,
    MAX_LOGIT_BIAS,
    MAX_METADATA,
    MAX_N,
    MAX_TOOLS,
    MAX_TOOLS_OTHER,
    MAX_TOP_LOGPROBS,
    PENALTY,
    between,
    check_metadata,
    check_safety_identifier,
    count,
    too_many,
)
from .decoding import Counted, count_items, decode_views
from .errors import bad_request, echo
from .tiers import DEFAULT_TIERS, SERVICE_TIERS, need
from .tool_names import MAX_NAME, check_function_name

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
# OpenAI's ReasoningEffort (its published schema; the openai SDK's Literal): `max` included.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class ImageUrl(msgspec.Struct):
    url: str
    detail: str | None = None


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None
    image_url: ImageUrl | None = None
    refusal: str | None = None
    input_audio: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)
    file: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class GoogleExtra(msgspec.Struct):
    thought_signature: str | None = None


class ExtraContent(msgspec.Struct):
    """A tool call's `extra_content`, as Google's OpenAI-compatible API names it: Gemini's thought
    signature of the call, to be sent back unchanged on the next turn (docs/translation/reasoning.md)."""

    google: GoogleExtra | None = None


class ToolCall(msgspec.Struct):
    id: str
    function: FunctionCall
    type: str = "function"
    extra_content: ExtraContent | None = None  # not OpenAI's: Google's thought signature of the call

    @property
    def thought_signature(self) -> str | None:
        extra = self.extra_content
        return extra.google.thought_signature if extra is not None and extra.google is not None else None


class ThinkingBlock(msgspec.Struct):
    """A reasoning block an Anthropic-family upstream produced, as the gateway hands it to OpenAI
    clients in `message.thinking_blocks` (docs/translation/reasoning.md): sent back on the next
    turn, it goes upstream unchanged, signature included."""

    type: str  # "thinking" | "redacted_thinking"
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None  # redacted_thinking: the encrypted reasoning


class Message(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    # Not OpenAI's: reasoning blocks with their signatures from an earlier answer (assistant only).
    thinking_blocks: list[ThinkingBlock] | None = None


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)
    strict: bool | None = None


class Tool(msgspec.Struct):
    type: str
    function: FunctionDef | None = None
    custom: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    type: str
    function: NamedFunction | None = None


class JsonSchemaFormat(msgspec.Struct):
    name: str
    description: str | None = None
    schema: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)
    strict: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: str
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatRequest(msgspec.Struct):
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    # Not OpenAI's (its legacy completions'), but passed through to OpenAI-compatible servers that
    # honour it (vLLM): typed only so metering reserves for every sequence it makes.
    best_of: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    reasoning_effort: str | None = None
    # Typed so a tier the deployments have no price for is refused, not served at the default price
    # (schema/tiers.py); forwarded as sent.
    service_tier: str | None = None
    # Typed only to bound them (OpenAI's schema); forwarded as sent to the upstreams that take them.
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # Typed only so a value of the wrong type is OpenAI's 400 naming it, whichever deployment would serve
    # the call (a translating adapter drops them, so a string `logprobs` was served); forwarded as sent.
    logprobs: bool | None = None
    store: bool | None = None
    user: str | None = None
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None


_PARTS = ("content", "tool_calls", "thinking_blocks")  # what the checks, estimates and translators walk
_NOUN = "content parts, tool calls and thinking blocks"
_MAPS = (("logit_bias", MAX_LOGIT_BIAS),)
# `metadata` held to a size before the typed decode, as the Responses door's (schema/responses.py): 16 pairs of
# at most 64 and 512 characters, escaped and quoted, are under 56 KiB of JSON.
_SIZED = (
    (
        "metadata",
        64 * 1024,
        f"'metadata' holds at most {MAX_METADATA} pairs, keys of at most 64 characters and values of at most 512.",
    ),
)
_typed = count_items(
    msgspec.json.Decoder(ChatRequest), Counted("messages", _PARTS, noun=_NOUN, maps=_MAPS, sized=_SIZED)
)
# The chat request a Responses turn or an Anthropic message is translated into: their own cap on tools.
_translated = count_items(
    msgspec.json.Decoder(ChatRequest),
    Counted("messages", _PARTS, max_tools=MAX_TOOLS_OTHER, noun=_NOUN, maps=_MAPS, sized=_SIZED),
)


class ParsedChat(msgspec.Struct):
    """The typed request plus its top-level fields as raw JSON, and what it needs from a deployment."""

    request: ChatRequest
    raw: dict[str, msgspec.Raw]
    needs: frozenset[str]
    # An exact thinking budget in tokens, when the client gave one (the Anthropic front door's
    # `thinking.budget_tokens`); `request.reasoning_effort` is its nearest level for other upstreams.
    thinking_budget: int | None = None
    # The client asked to see a summary of the reasoning (the Responses front door's `reasoning.summary`):
    # upstreams that return reasoning only on request (Gemini's includeThoughts) are asked for it.
    reasoning_summary: bool = False
    # A Responses function name longer than chat completions take (tool_names.py): where it is, for the
    # 400 of a deployment reached through chat; None when every name fits.
    long_name: str | None = None
    # The last upstream body made of `raw` for an OpenAI-shaped upstream, and the model it names
    # (providers/passthrough.py chat_body): a retry, or a failover to the same model, sends the same bytes.
    upstream_body: tuple[str, bytes] | None = None

    @property
    def stream(self) -> bool:
        return bool(self.request.stream)

    @property
    def include_usage(self) -> bool:
        opts = self.request.stream_options
        return bool(opts and opts.include_usage)


def parse_chat(body: bytes, names: int = MAX_NAME, tools: int = MAX_TOOLS) -> ParsedChat:
    """`names`, `tools`: the longest function name and the most tools allowed (the Responses and Anthropic
    doors' translations allow their own)."""
    raw, req = decode_views(body, _typed if tools == MAX_TOOLS else _translated)
    _validate(req, names, tools)
    return ParsedChat(request=req, raw=raw, needs=_needs(req))


def _validate(req: ChatRequest, names: int, tools: int) -> None:
    if not req.model:
        raise bad_request(
            "'model' must be a non-empty string naming a model group (see GET /v1/models).", param="model"
        )
    if not req.messages:
        raise bad_request("'messages' must contain at least one message.", param="messages", code="empty_array")
    for i, msg in enumerate(req.messages):
        if msg.role not in ROLES:
            raise bad_request(
                f"messages[{i}].role '{echo(msg.role)}' is not one of: {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
        if msg.role == "tool" and not msg.tool_call_id:
            raise bad_request(
                f"messages[{i}] has role 'tool' but no 'tool_call_id'; set it to the id of the tool call it answers.",
                param=f"messages[{i}].tool_call_id",
            )
        if msg.role in ("user", "system", "developer", "tool") and msg.content is None:
            raise bad_request(
                f"messages[{i}].content is required for role '{msg.role}'.", param=f"messages[{i}].content"
            )
        for j, call in enumerate(msg.tool_calls) if msg.tool_calls else ():  # history is held as OpenAI holds it
            check_function_name(call.function.name, f"messages[{i}].tool_calls[{j}].function.name", names)
        for k, block in enumerate(msg.thinking_blocks) if msg.thinking_blocks else ():
            where = f"messages[{i}].thinking_blocks[{k}]"
            if msg.role != "assistant":
                raise bad_request(f"{where}: thinking blocks belong to assistant messages only.", param=where)
            if block.type == "thinking" and (block.thinking is None or block.signature is None):
                raise bad_request(
                    f"{where}: a thinking block needs 'thinking' and its 'signature', exactly as the answer gave them.",
                    param=where,
                )
            if block.type == "redacted_thinking" and not block.data:
                raise bad_request(f"{where}: a redacted_thinking block needs its 'data'.", param=where)
            if block.type not in ("thinking", "redacted_thinking"):
                raise bad_request(f"{where}.type must be 'thinking' or 'redacted_thinking'.", param=f"{where}.type")
        if isinstance(msg.content, list):
            for j, part in enumerate(msg.content):
                if part.type == "image_url" and part.image_url is None:
                    raise bad_request(
                        f"messages[{i}].content[{j}] is an image_url part without 'image_url.url'.",
                        param=f"messages[{i}].content[{j}].image_url",
                    )
                if part.type == "text" and part.text is None:
                    raise bad_request(
                        f"messages[{i}].content[{j}] is a text part without 'text'.",
                        param=f"messages[{i}].content[{j}].text",
                    )
    if isinstance(req.tool_choice, str) and req.tool_choice not in TOOL_CHOICES:
        raise bad_request("'tool_choice' must be 'none', 'auto', 'required' or a named function.", param="tool_choice")
    if req.tool_choice is not None and not req.tools and req.tool_choice != "none":
        raise bad_request("'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice")
    if req.tools is not None and len(req.tools) > tools:
        raise too_many("tools", len(req.tools), tools)
    for i, tool in enumerate(req.tools or ()):
        if tool.type == "function":
            if tool.function is None:
                raise bad_request(f"tools[{i}] has type 'function' but no 'function'.", param=f"tools[{i}].function")
            check_function_name(tool.function.name, f"tools[{i}].function.name", names)
    fmt = req.response_format
    if fmt is not None:
        if fmt.type not in RESPONSE_FORMATS:
            raise bad_request(
                f"response_format.type '{echo(fmt.type)}' is not one of: text, json_object, json_schema.",
                param="response_format.type",
            )
        if fmt.type == "json_schema" and fmt.json_schema is None:
            raise bad_request(
                "response_format of type 'json_schema' needs 'json_schema'.", param="response_format.json_schema"
            )
    # The optional numbers, checked one by one only when one is set (the common call sets none).
    if (req.n, req.best_of, req.seed, req.top_logprobs, req.presence_penalty, req.frequency_penalty) != _UNSET6:
        between(req.n, 1, MAX_N, "n")
        between(req.best_of, 1, MAX_N, "best_of")  # metering reserves for every sequence it makes
        between(req.seed, -INT64, INT64 - 1, "seed")
        between(req.top_logprobs, 0, MAX_TOP_LOGPROBS, "top_logprobs")
        between(req.presence_penalty, -PENALTY, PENALTY, "presence_penalty")
        between(req.frequency_penalty, -PENALTY, PENALTY, "frequency_penalty")
    if req.logit_bias:
        for token, bias in req.logit_bias.items():
            between(bias, -LOGIT_BIAS, LOGIT_BIAS, f"logit_bias.{token[:20]}")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise bad_request("'temperature' must be between 0 and 2.", param="temperature")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise bad_request("'top_p' must be between 0 and 1.", param="top_p")
    if isinstance(req.stop, list) and len(req.stop) > 4:
        raise bad_request("'stop' accepts at most 4 sequences.", param="stop")
    if req.max_tokens is not None or req.max_completion_tokens is not None:
        count(req.max_tokens, "max_tokens")
        count(req.max_completion_tokens, "max_completion_tokens")
    if req.service_tier is not None and req.service_tier not in SERVICE_TIERS:
        raise bad_request(f"'service_tier' must be one of: {', '.join(SERVICE_TIERS)}.", param="service_tier")
    if req.reasoning_effort is not None and req.reasoning_effort not in REASONING_EFFORTS:
        raise bad_request(
            f"'reasoning_effort' must be one of: {', '.join(REASONING_EFFORTS)}.", param="reasoning_effort"
        )
    if req.metadata:
        check_metadata(req.metadata)
    if req.safety_identifier is not None:
        check_safety_identifier(req.safety_identifier)
    if req.stream_options is not None and not req.stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")


_UNSET6 = (None,) * 6
_CHAT = frozenset({"chat"})
_CHAT_STREAM = frozenset({"chat", "streaming"})


def _needs(req: ChatRequest) -> frozenset[str]:
    """Capabilities a deployment must have to serve this request (the two commonest sets shared)."""
    tier = req.service_tier  # a tier besides auto and default is served only where it has a price (tiers.py)
    tools = bool(req.tools) and req.tool_choice != "none"
    schema = req.response_format is not None and req.response_format.type == "json_schema"
    vision = False
    for msg in req.messages:
        if isinstance(msg.content, list) and any(p.type == "image_url" for p in msg.content):
            vision = True
            break
    if not (tools or schema or vision or tier is not None):
        return _CHAT_STREAM if req.stream else _CHAT
    needs = {"chat"}
    if req.stream:
        needs.add("streaming")
    if tools:
        needs.add("tools")
    if schema:
        needs.add("json_schema")
    if vision:
        needs.add("vision")
    if tier is not None and tier not in DEFAULT_TIERS:
        needs.add(need(tier))
    return frozenset(needs)
