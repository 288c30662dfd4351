"""Anthropic Messages request -> canonical OpenAI chat request; OpenAI completion -> Anthropic message.

The canonical body is built as plain data, encoded once and handed to `parse_chat`, so the
typed view, the raw top-level fields that pass-through adapters forward, and the capability
needs are exactly what an OpenAI client sending the same request would produce.
Mapping rules and the reasons behind them: docs/anthropic-front-door.md.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import msgspec

from ...providers.reasoning import MIN_BUDGET, effort_of
from ...schema import bounded
from ...schema.anthropic import Block, MessagesRequest, ParsedMessages, ToolDef
from ...schema.bounds import MAX_INT, MAX_TOOLS_OTHER
from ...schema.chat import ParsedChat, parse_chat
from ...schema.errors import ApiError, bad_request, echo
from ...schema.peek import Usage
from ...storage.ids import new_id

_encode = msgspec.json.encode
Json = dict[str, Any]  # a JSON object as it is built for encoding (OpenAI request parts, Anthropic answer parts)
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# OpenAI accepts at most four stop sequences; so does every canonical consumer.
_MAX_STOP = 4
# Input blocks that only an Anthropic model produced or can use; dropped from history (reported).
_HISTORY_ONLY = frozenset({"thinking", "redacted_thinking"})


def to_canonical(parsed: ParsedMessages) -> tuple[ParsedChat, list[str]]:
    """The canonical chat request and the names of Anthropic parameters it could not carry."""
    req = parsed.request
    dropped: set[str] = set(parsed.unknown)
    _check_scalars(req)
    body: Json = {"model": req.model, "messages": _messages(req, dropped), "max_completion_tokens": req.max_tokens}
    if req.stop_sequences:
        if len(req.stop_sequences) > _MAX_STOP:
            raise bad_request(
                f"stop_sequences: at most {_MAX_STOP} sequences are supported by this gateway "
                f"(got {len(req.stop_sequences)}).",
                param="stop_sequences",
            )
        body["stop"] = req.stop_sequences
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        dropped.add("top_k")  # OpenAI has no top-k sampling
    if req.metadata is not None and req.metadata.user_id:
        body["user"] = req.metadata.user_id
    if req.stream:
        # Usage arrives in the last chunk only when asked for; the door needs it for message_delta.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if req.tools:
        body["tools"] = [_tool(t, i, dropped) for i, t in enumerate(req.tools)]
    _tool_choice(req, body)
    budget = _thinking(req, body, dropped)
    if req.service_tier is not None:
        dropped.add("service_tier")
    _output_config(req, body, dropped)
    if parsed.multihome is not None:
        body["multihome"] = parsed.multihome  # routing narrowing, read (and removed) by the router's front half
    try:
        canonical = parse_chat(_encode(body), tools=MAX_TOOLS_OTHER)
    except ApiError as err:
        # The checks above should catch everything first; if not, say it came from the translation.
        raise bad_request(f"The request cannot be served: {err.body.message}", param=err.body.param) from None
    canonical.thinking_budget = budget  # exact, for a Claude upstream; the effort serves the others
    return canonical, sorted(dropped)


# Anthropic's effort levels: each is OpenAI's reasoning_effort of the same name too (docs/translation/reasoning.md).
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_ADAPTIVE_DEFAULT_EFFORT = "high"  # Anthropic's, when output_config.effort is left out


def _thinking(req: MessagesRequest, body: Json, dropped: set[str]) -> int | None:
    """`thinking: {type: enabled, budget_tokens}` -> OpenAI's nearest `reasoning_effort`; `{type: adaptive}` ->
    the `output_config.effort` asked, as `reasoning_effort` (docs/translation/reasoning.md). The exact budget of
    `enabled`, for a Claude upstream; None when there is none."""
    thinking = req.thinking
    if thinking is None or thinking.type == "disabled":
        return None
    if thinking.display is not None:
        dropped.add("thinking.display")  # thinking is returned as the upstream gives it
    if thinking.type == "adaptive":
        body["reasoning_effort"] = _adaptive_effort(req)
        return None  # the model decides how much: a Claude upstream gets the budget of that effort
    if thinking.type != "enabled" or thinking.budget_tokens is None or thinking.budget_tokens < MIN_BUDGET:
        raise bad_request(
            f"thinking: use {{type: 'enabled', budget_tokens: N}} with N at least {MIN_BUDGET}, "
            "{type: 'adaptive'} or {type: 'disabled'}.",
            param="thinking",
        )
    if req.max_tokens is not None and thinking.budget_tokens >= req.max_tokens:
        raise bad_request("thinking.budget_tokens: must be less than max_tokens.", param="thinking.budget_tokens")
    body["reasoning_effort"] = effort_of(thinking.budget_tokens)
    return thinking.budget_tokens


def _check_scalars(req: MessagesRequest) -> None:
    if not req.model:
        raise bad_request("model: must be a non-empty string naming a model on this gateway.", param="model")
    if req.max_tokens is not None and req.max_tokens < 1:
        raise bad_request("max_tokens: must be at least 1.", param="max_tokens")
    if req.max_tokens is not None and req.max_tokens > MAX_INT:  # never a 70-bit integer forwarded upstream
        raise bad_request(f"max_tokens: must be at most {MAX_INT}.", param="max_tokens")
    if req.temperature is not None and not 0 <= req.temperature <= 1:
        raise bad_request("temperature: must be between 0 and 1.", param="temperature")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise bad_request("top_p: must be between 0 and 1.", param="top_p")
    if req.top_k is not None and not 0 <= req.top_k <= MAX_INT:
        raise bad_request(f"top_k: must be between 0 and {MAX_INT}.", param="top_k")
    if not req.messages:
        raise bad_request("messages: at least one message is required.", param="messages")


def _messages(req: MessagesRequest, dropped: set[str]) -> list[Json]:
    out: list[Json] = []
    if req.system is not None:
        system = _system(req.system, dropped)
        if system:
            out.append({"role": "system", "content": system})
    for i, msg in enumerate(req.messages):
        where = f"messages.{i}"
        if msg.role == "user":
            out.extend(_user(msg.content, where, dropped))
        elif msg.role == "assistant":
            out.append(_assistant(msg.content, where, dropped))
        else:
            hint = " Put system instructions in the top-level 'system' field." if msg.role == "system" else ""
            raise bad_request(
                f"{where}.role: '{echo(msg.role)}' is not one of 'user', 'assistant'.{hint}", param=f"{where}.role"
            )
    return out


def _system(system: str | list[Block], dropped: set[str]) -> str | list[Json]:
    if isinstance(system, str):
        return system
    parts = []
    for j, block in enumerate(system):
        if block.type != "text" or block.text is None:
            raise bad_request(f"system.{j}: only text blocks are allowed in 'system'.", param=f"system.{j}")
        _note_cache(block, dropped)
        parts.append(block.text)
    # One block stays a plain string (accepted by every OpenAI-compatible server); several stay parts.
    return parts[0] if len(parts) == 1 else [{"type": "text", "text": p} for p in parts]


def _user(content: str | list[Block], where: str, dropped: set[str]) -> list[Json]:
    """Tool results become `tool` messages, in order, before the user's remaining content."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[Json] = []
    parts: list[Json] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        _note_cache(block, dropped)
        if block.type == "tool_result":
            tools.append(_tool_result(block, at, dropped))
        elif block.type == "text":
            parts.append(_text_part(block, at))
        elif block.type == "image":
            parts.append(_image_part(block, at))
        elif block.type in _HISTORY_ONLY:
            dropped.add("thinking")
        else:
            raise _unsupported_block(block.type, at, "user", _USER_BLOCKS)
    if not parts and not tools:
        raise bad_request(f"{where}.content: at least one content block is required.", param=f"{where}.content")
    if parts:
        tools.append({"role": "user", "content": parts})
    return tools


def _assistant(content: str | list[Block], where: str, dropped: set[str]) -> Json:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[Json] = []
    thinking: list[Json] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        _note_cache(block, dropped)
        if block.type == "text":
            texts.append(_text_part(block, at)["text"])
        elif block.type == "tool_use":
            calls.append(_tool_call(block, at))
        elif block.type == "thinking":
            # Carried as the OpenAI side's thinking_blocks: a Claude upstream gets it back unchanged.
            # Both fields are required, as Anthropic's API requires them (an empty signature is one:
            # unsigned reasoning another upstream wrote); a block without one would be dropped unseen.
            _required(block.thinking, f"{at}.thinking")
            _required(block.signature, f"{at}.signature")
            thinking.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
        elif block.type == "redacted_thinking":
            if not block.data:
                raise bad_request(f"{at}.data: Field required (a redacted_thinking block's data).", param=f"{at}.data")
            thinking.append({"type": "redacted_thinking", "data": block.data})
        else:
            raise _unsupported_block(block.type, at, "assistant", _ASSISTANT_BLOCKS)
    message: Json = {"role": "assistant", "content": None}
    if thinking:
        message["thinking_blocks"] = thinking
    if texts:
        message["content"] = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
    if calls:
        message["tool_calls"] = calls
    return message


def _text_part(block: Block, at: str) -> Json:
    if block.text is None:
        raise bad_request(f"{at}.text: Field required.", param=f"{at}.text")
    return {"type": "text", "text": block.text}


def _image_part(block: Block, at: str) -> Json:
    src = block.source
    if src is None:
        raise bad_request(f"{at}.source: Field required.", param=f"{at}.source")
    if src.type == "base64":
        if src.media_type not in _MEDIA_TYPES or not src.data:
            raise bad_request(
                f"{at}.source: a base64 image needs 'data' and a 'media_type' of {', '.join(sorted(_MEDIA_TYPES))}.",
                param=f"{at}.source",
            )
        return {"type": "image_url", "image_url": {"url": f"data:{src.media_type};base64,{src.data}"}}
    if src.type == "url":
        if not src.url:
            raise bad_request(f"{at}.source.url: Field required.", param=f"{at}.source.url")
        return {"type": "image_url", "image_url": {"url": src.url}}
    raise bad_request(
        f"{at}.source.type: '{echo(src.type)}' is not supported by this gateway; use 'base64' or 'url'.",
        param=f"{at}.source.type",
    )


def _tool_call(block: Block, at: str) -> Json:
    if not block.id or not block.name:
        raise bad_request(f"{at}: a tool_use block needs 'id' and 'name'.", param=at)
    if not len(block.input):  # required by Anthropic's API: a call without arguments sends {}
        raise bad_request(f"{at}.input: Field required (a tool_use block's input, an object).", param=f"{at}.input")
    args = bytes(block.input)
    if not args.lstrip().startswith(b"{"):
        raise bad_request(f"{at}.input: must be a JSON object.", param=f"{at}.input")
    # Keep the client's bytes: OpenAI wants the arguments as JSON text, and re-encoding would reorder nothing useful.
    return {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": args.decode()}}


def _tool_result(block: Block, at: str, dropped: set[str]) -> Json:
    if not block.tool_use_id:
        raise bad_request(f"{at}.tool_use_id: Field required.", param=f"{at}.tool_use_id")
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        pieces = []
        for k, inner in enumerate(content):
            _note_cache(inner, dropped)
            if inner.type != "text":
                raise bad_request(
                    f"{at}.content.{k}: tool results may contain only text on this gateway "
                    f"(got '{echo(inner.type)}'); OpenAI-compatible models cannot read images in tool results.",
                    param=f"{at}.content.{k}",
                )
            pieces.append(_text_part(inner, f"{at}.content.{k}")["text"])
        text = "\n".join(pieces)
    if block.is_error:
        # OpenAI tool messages have no error flag; say it in the text the model reads.
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _tool(tool: ToolDef, i: int, dropped: set[str]) -> Json:
    at = f"tools.{i}"
    if tool.type not in (None, "custom"):
        raise bad_request(
            f"{at}.type: '{echo(tool.type)}' is an Anthropic server tool; this gateway serves only client tools "
            "(name, description, input_schema).",
            param=f"{at}.type",
        )
    if not len(tool.input_schema):
        raise bad_request(f"{at}.input_schema: Field required.", param=f"{at}.input_schema")
    if not _object_schema(tool.input_schema):
        # Anthropic's rule: the tool's input is an object. Checked here, so every upstream gets the
        # same 400 (otherwise a model could answer with an array, which no tool_use block can carry).
        raise bad_request(f"{at}.input_schema.type: Input should be 'object'.", param=f"{at}.input_schema.type")
    if len(tool.cache_control):
        dropped.add("cache_control")
    function: Json = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _object_schema(raw: msgspec.Raw) -> bool:
    try:
        schema = bounded.decode(raw)
    except msgspec.DecodeError:
        return False
    return isinstance(schema, dict) and schema.get("type") == "object"


def _tool_choice(req: MessagesRequest, body: Json) -> None:
    choice = req.tool_choice
    if choice is None:
        return
    if choice.type not in _TOOL_CHOICE and choice.type != "tool":
        raise bad_request(
            f"tool_choice.type: '{echo(choice.type)}' is not one of 'auto', 'any', 'tool', 'none'.",
            param="tool_choice.type",
        )
    if not req.tools:
        if choice.type in ("any", "tool"):
            raise bad_request(f"tool_choice: type '{choice.type}' needs 'tools'.", param="tool_choice")
        return  # auto or none without tools: nothing to choose among
    if choice.type == "tool":
        if not choice.name:
            raise bad_request("tool_choice.name: Field required when type is 'tool'.", param="tool_choice.name")
        if all(t.name != choice.name for t in req.tools or ()):
            raise bad_request(
                f"tool_choice.name: no tool named '{echo(choice.name)}' in 'tools'.", param="tool_choice.name"
            )
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        body["tool_choice"] = _TOOL_CHOICE[choice.type]
    if choice.disable_parallel_tool_use and choice.type != "none":
        body["parallel_tool_calls"] = False


def _adaptive_effort(req: MessagesRequest) -> str:
    effort = req.output_config.effort if req.output_config is not None else None
    if effort is None:
        return _ADAPTIVE_DEFAULT_EFFORT
    if effort not in _EFFORTS:
        raise bad_request(
            f"output_config.effort: '{echo(effort)}' is not one of {', '.join(_EFFORTS)}.", param="output_config.effort"
        )
    return effort


def _output_config(req: MessagesRequest, body: Json, dropped: set[str]) -> None:
    cfg = req.output_config
    if cfg is None:
        return
    if cfg.effort is not None and (req.thinking is None or req.thinking.type != "adaptive"):
        dropped.add("output_config.effort")  # only adaptive thinking's amount has an OpenAI equivalent
    fmt = cfg.format
    if fmt is None:
        return
    if fmt.type != "json_schema" or not len(fmt.schema):
        raise bad_request(
            "output_config.format: only {type: 'json_schema', schema} is supported.", param="output_config.format"
        )
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": fmt.schema, "strict": True},
    }


def _note_cache(block: Block, dropped: set[str]) -> None:
    if len(block.cache_control):
        dropped.add("cache_control")


def _required(value: str | None, at: str) -> None:
    if value is None:
        raise bad_request(f"{at}: Field required.", param=at)


# The block types each role's turn may hold here: a tool_use in a user turn is as wrong as a PDF.
_USER_BLOCKS = "text, image, tool_result"
_ASSISTANT_BLOCKS = "text, tool_use, thinking, redacted_thinking"


def _unsupported_block(kind: str, at: str, role: str, supported: str) -> ApiError:
    return bad_request(
        f"{at}.type: content blocks of type '{echo(kind)}' are not supported in {role} turns by this gateway "
        f"(supported: {supported}).",
        param=f"{at}.type",
    )


# ---------------------------------------------------------------------------------------------
# Response: OpenAI chat.completion -> Anthropic message


class _Function(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class _ToolCall(msgspec.Struct):
    id: str = ""
    function: _Function | None = None


class _ThinkingBlock(msgspec.Struct):
    type: str = "thinking"
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None
    reasoning_content: str | None = None
    thinking_blocks: list[_ThinkingBlock] | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string that matched


class _Completion(msgspec.Struct):
    id: str | None = None  # null from some OpenAI-compatible servers: message_id gives the answer one
    model: str = ""
    choices: list[_Choice] = []
    usage: Usage | None = None


_completion = bounded.Decoder(_Completion)
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_id(openai_id: str | None) -> str:
    """`chatcmpl-abc` -> `msg_abc`: Anthropic-shaped, still traceable to the upstream answer. An
    Anthropic upstream's id (`chatcmpl-msg_abc`, providers/anthropic) comes back as it was: `msg_abc`. An
    answer without one (empty, null) gets its own, so no two answers share an id."""
    if not openai_id:
        return new_id("msg")
    suffix = openai_id.partition("-")[2] or openai_id
    if suffix.startswith("msg_") and len(suffix) > len("msg_"):  # a bare `msg_` would be an id of no answer
        return suffix
    return "msg_" + suffix


def stop_reason(
    finish_reason: str | None, matched: str | int | None, stop_sequences: list[str] | None
) -> tuple[str, str | None]:
    """OpenAI finish_reason -> (Anthropic stop_reason, stop_sequence).

    OpenAI does not say which stop sequence matched; servers that do (vLLM's `stop_reason`)
    get `stop_sequence`, everything else that stopped naturally is `end_turn`.
    """
    if finish_reason == "stop" and isinstance(matched, str) and stop_sequences and matched in stop_sequences:
        return "stop_sequence", matched
    return _STOP.get(finish_reason or "stop", "end_turn"), None


class AnthropicUsage(TypedDict):
    """Anthropic's `usage` object, as this door fills it (unary answers and message_delta events)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens_details: NotRequired[dict[str, int]]  # {thinking_tokens}: the reasoning part of output_tokens


def usage_of(usage: Usage | None) -> AnthropicUsage:
    """Anthropic's input_tokens excludes cache reads; OpenAI's prompt_tokens includes them."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    cached = (usage.prompt_tokens_details.cached_tokens or 0) if usage.prompt_tokens_details else 0
    out: AnthropicUsage = {
        "input_tokens": max(0, usage.prompt_tokens - cached),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }
    if usage.reasoning_tokens:  # known (OpenAI reasoning_tokens, Gemini thoughts, Claude's own count)
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def tool_input(arguments: str, deployment: str) -> Json:
    try:
        value = bounded.decode(arguments) if arguments.strip() else {}
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise ApiError(
            502,
            f"Deployment '{deployment}' returned tool-call arguments that are not a JSON object; "
            "the answer cannot be given as a tool_use block. Retry the request.",
            type="server_error",
            code="upstream_bad_tool_arguments",
        )
    return value


def thinking_blocks(blocks: list[_ThinkingBlock] | None, text: str | None) -> list[Json]:
    """An answer's reasoning as Anthropic thinking blocks: the upstream's own blocks with their
    signatures (a Claude upstream), else its reasoning text as one unsigned block (an
    OpenAI-compatible one; signature "" says it can go back to that upstream only)."""
    if blocks:
        return [
            {"type": "redacted_thinking", "data": b.data or ""}
            if b.type == "redacted_thinking"
            else {"type": "thinking", "thinking": b.thinking or "", "signature": b.signature or ""}
            for b in blocks
        ]
    return [{"type": "thinking", "thinking": text, "signature": ""}] if text else []


def to_anthropic(body: bytes, req: MessagesRequest, deployment: str) -> bytes:
    """An OpenAI chat.completion body (any adapter's output) as an Anthropic message body."""
    try:
        completion = _completion.decode(body)
    except msgspec.DecodeError:
        raise ApiError(
            502, f"Deployment '{deployment}' returned a malformed completion.", type="server_error"
        ) from None
    choice = completion.choices[0] if completion.choices else _Choice()
    msg = choice.message or _Message()
    content: list[Json] = thinking_blocks(msg.thinking_blocks, msg.reasoning_content)
    text = (msg.content or "") + (msg.refusal or "")
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.tool_calls or ():
        fn = call.function or _Function()
        content.append(
            {"type": "tool_use", "id": call.id, "name": fn.name, "input": tool_input(fn.arguments, deployment)}
        )
    finish = choice.finish_reason
    if msg.refusal and finish in (None, "stop"):
        finish = "content_filter"
    reason, sequence = stop_reason(finish, choice.stop_reason, req.stop_sequences)
    return _encode(
        {
            "id": message_id(completion.id),
            "type": "message",
            "role": "assistant",
            "model": completion.model or req.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage_of(completion.usage),
        }
    )
