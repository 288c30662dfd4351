"""OpenAI chat request -> Anthropic Messages request body (docs/translation/anthropic.md).

Every top-level OpenAI field is either mapped, dropped (reported in `x-multihome-dropped-params`)
or refused with a 400; the tables below are the rule, the docs repeat them for people.
"""

from __future__ import annotations

from typing import Any

from ...schema.chat import ChatRequest, ContentPart, Message, ParsedChat
from ...schema.errors import bad_request
from ..canonical_in import max_output_tokens, raw_json, stop_list, tool_arguments, unsupported
from ..reasoning import thinking_budget

PROVIDER = "Anthropic"
# Anthropic requires max_tokens; the adapter does not know the deployment's limit, so a request
# without one gets this (documented) budget.
DEFAULT_MAX_TOKENS = 4096
# JSON mode (`response_format: json_object`) has no Anthropic switch: the adapter forces a call
# to this tool with an open object schema and turns its input back into the message text.
JSON_TOOL = "multihome_json_object"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Fields read from the typed request (or from raw below) and translated.
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "reasoning_effort",
        "n",
        "logprobs",
        "top_logprobs",
        "user",
        "safety_identifier",
        "modalities",
    }
)
# Fields the upstream cannot honour and whose absence does not make the answer wrong-shaped:
# dropped and reported. Anything unknown is treated the same way.
_DROPPED = frozenset(
    {
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "verbosity",
        "prediction",
    }
)
# Fields whose answer the client would be missing or misread: refused.
_REFUSED = frozenset({"audio", "web_search_options", "functions", "function_call"})

_EMPTY_SCHEMA = {"type": "object", "properties": {}}


def _raw_value(parsed: ParsedChat, name: str) -> Any:
    raw = parsed.raw.get(name)
    return None if raw is None else raw_json(raw, name)


def _top_level(parsed: ParsedChat) -> tuple[list[str], dict[str, Any]]:
    """Dropped field names, and extra mapped values read from raw (metadata.user_id)."""
    dropped: list[str] = []
    extra: dict[str, Any] = {}
    for name in parsed.raw:
        if name in _MAPPED:
            continue
        if name in _REFUSED:
            if _raw_value(parsed, name) is not None:
                raise unsupported(name, PROVIDER)
            continue
        value = _raw_value(parsed, name)
        # Defaults (null, false, 0, empty) change nothing, so they are not worth a header.
        if value not in (None, False, 0, "", [], {}):
            dropped.append(name)
    req = parsed.request
    if req.n is not None and req.n > 1:
        raise unsupported("n", PROVIDER)
    if "logprobs" in parsed.raw and _raw_value(parsed, "logprobs"):
        raise unsupported("logprobs", PROVIDER)
    modalities = _raw_value(parsed, "modalities") if "modalities" in parsed.raw else None
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise unsupported("modalities", PROVIDER)
    user = None
    for name in ("safety_identifier", "user"):
        if name in parsed.raw:
            value = _raw_value(parsed, name)
            if isinstance(value, str) and value:
                user = value
                break
    if user is not None:
        extra["metadata"] = {"user_id": user}
    return dropped, extra


# -- prompt-caching markers ------------------------------------------------------------------

# A client's cache_control marker by (message index, part index); part -1 marks the whole message.
Markers = dict[tuple[int, int], Any]


def _cache_markers(parsed: ParsedChat) -> Markers:
    """`cache_control` the client put on content parts or messages: (message, part) -> marker.

    The typed schema does not model them, so they are read from the raw messages, and only when
    the bytes mention them (the common request pays nothing). A message-level marker is keyed
    with part -1 and lands on that message's last block.
    """
    raw = parsed.raw.get("messages")
    if raw is None or b"cache_control" not in bytes(raw):
        return {}
    markers: Markers = {}
    for i, msg in enumerate(raw_json(raw, "messages")):
        if not isinstance(msg, dict):
            continue
        if msg.get("cache_control") is not None:
            markers[(i, -1)] = msg["cache_control"]
        content = msg.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("cache_control") is not None:
                    markers[(i, j)] = part["cache_control"]
    return markers


def _mark(block: dict[str, Any], markers: Markers, i: int, j: int) -> dict[str, Any]:
    marker = markers.get((i, j)) if markers else None
    if marker is not None:
        block["cache_control"] = marker
    return block


# -- messages ---------------------------------------------------------------------------------


def _image_block(part: ContentPart, where: str) -> dict[str, Any]:
    assert part.image_url is not None  # parse_chat refuses an image_url part without one
    url = part.image_url.url
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(";base64,")
        if not sep or not data:
            raise bad_request(f"{where}: the data URL must be base64 (data:<type>;base64,<data>).", param=where)
        if head not in IMAGE_TYPES:
            raise bad_request(
                f"{where}: image type '{head}' is not supported by {PROVIDER} (jpeg, png, gif, webp).", param=where
            )
        return {"type": "image", "source": {"type": "base64", "media_type": head, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request(f"{where}: an image must be an https URL or a base64 data URL.", param=where)


def _text_blocks(msg: Message, i: int, markers: Markers, where: str, allow_images: bool) -> list[dict[str, Any]]:
    blocks = []
    for j, part in enumerate(msg.content if isinstance(msg.content, list) else ()):
        if part.type == "text" or part.type == "refusal":
            text = part.text if part.type == "text" else part.refusal
            if text:  # Anthropic rejects empty text blocks
                blocks.append(_mark({"type": "text", "text": text}, markers, i, j))
        elif part.type == "image_url" and allow_images:
            blocks.append(_mark(_image_block(part, f"{where}.content[{j}]"), markers, i, j))
        else:
            raise unsupported(f"{where}.content[{j}].type", PROVIDER, part.type)
    if isinstance(msg.content, str) and msg.content:
        blocks.append({"type": "text", "text": msg.content})
    return blocks


def _tool_result(msg: Message, i: int, markers: Markers) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
    if isinstance(msg.content, str):
        if msg.content:
            block["content"] = msg.content
    else:
        parts = _text_blocks(msg, i, markers, f"messages[{i}]", allow_images=False)
        if parts:
            # Keep blocks (and their cache markers) when there are markers; otherwise one string.
            block["content"] = parts if any("cache_control" in p for p in parts) else "".join(p["text"] for p in parts)
    return block


def _assistant_blocks(msg: Message, i: int, markers: Markers) -> list[dict[str, Any]]:
    # Thinking first, as the model produced it; Anthropic checks each signature, so nothing in a
    # block may change on its way back.
    # An unsigned block (reasoning an OpenAI-compatible upstream wrote) cannot be verified by
    # Claude, which would refuse the call: it stays behind.
    blocks: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": b.thinking, "signature": b.signature}
        if b.type == "thinking"
        else {"type": "redacted_thinking", "data": b.data}
        for b in msg.thinking_blocks or ()
        if b.type != "thinking" or b.signature
    ]
    blocks += _text_blocks(msg, i, markers, f"messages[{i}]", allow_images=False)
    for k, call in enumerate(msg.tool_calls or ()):
        where = f"messages[{i}].tool_calls[{k}]"
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": tool_arguments(call.function.arguments, where),
            }
        )
    return blocks


def translate_messages(req: ChatRequest, markers: Markers) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages): system/developer lifted out, tool results turned into user
    turns, consecutive same-role turns merged (Anthropic wants alternating turns)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        role = msg.role
        if role in ("system", "developer"):
            blocks = _text_blocks(msg, i, markers, f"messages[{i}]", allow_images=False)
            _mark_last(blocks, markers, i)
            system.extend(blocks)
            continue
        if role == "user":
            blocks, turn_role = _text_blocks(msg, i, markers, f"messages[{i}]", allow_images=True), "user"
        elif role == "assistant":
            blocks, turn_role = _assistant_blocks(msg, i, markers), "assistant"
        elif role == "tool":
            blocks, turn_role = [_tool_result(msg, i, markers)], "user"
        else:  # "function": the deprecated pre-tools protocol
            raise unsupported(f"messages[{i}].role", PROVIDER, "function")
        if not blocks:
            continue  # an empty turn (e.g. assistant content "" without tool calls) carries nothing
        _mark_last(blocks, markers, i)
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    # Plain single-text turns go out as strings: smaller and what most Anthropic clients send.
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
            turn["content"] = content[0]["text"]
    return system, turns


def _mark_last(blocks: list[dict[str, Any]], markers: Markers, i: int) -> None:
    marker = markers.get((i, -1)) if markers else None
    if marker is not None and blocks:
        blocks[-1]["cache_control"] = marker


# -- tools and output format ------------------------------------------------------------------


def _tools(req: ChatRequest) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function" or tool.function is None:
            raise unsupported(f"tools[{i}].type", PROVIDER, tool.type)
        fn = tool.function
        spec: dict[str, Any] = {"name": fn.name}
        if fn.description:
            spec["description"] = fn.description
        # The schema goes out as the client's bytes: no decode/encode round trip.
        spec["input_schema"] = fn.parameters if len(fn.parameters) else _EMPTY_SCHEMA
        out.append(spec)
    return out


def _tool_choice(req: ChatRequest) -> dict[str, Any] | None:
    tc = req.tool_choice
    choice: dict[str, Any] | None
    if tc is None:
        choice = None
    elif tc == "auto":
        choice = {"type": "auto"}
    elif tc == "required":
        choice = {"type": "any"}
    elif isinstance(tc, str):  # "none": parse_chat allows only none, auto and required
        choice = {"type": "none"}
    elif tc.type == "function" and tc.function is not None:
        choice = {"type": "tool", "name": tc.function.name}
    else:
        raise unsupported("tool_choice.type", PROVIDER, tc.type)
    if req.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return choice


def build_body(parsed: ParsedChat, model: str) -> tuple[dict[str, Any], list[str]]:
    """The Anthropic request body and the names of dropped OpenAI parameters."""
    req = parsed.request
    dropped, body = _top_level(parsed)
    system, messages = translate_messages(req, _cache_markers(parsed))
    budget, max_tokens = thinking_budget(
        req.reasoning_effort, max_output_tokens(req), DEFAULT_MAX_TOKENS, parsed.thinking_budget
    )
    if budget is None and req.reasoning_effort not in (None, "none", "minimal"):
        dropped.append("reasoning_effort")  # max_completion_tokens leaves no room for a thinking budget
    body.update({"model": model, "max_tokens": max_tokens or DEFAULT_MAX_TOKENS, "messages": messages})
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if system:
        # A plain string unless the client marked a system part for caching.
        body["system"] = system if any("cache_control" in b for b in system) else "\n\n".join(b["text"] for b in system)
    if req.temperature is not None:
        if req.temperature > 1:
            raise bad_request(
                f"'temperature' {req.temperature:g} is above 1, the maximum when the request is served by {PROVIDER} "
                "(range 0-1).",
                param="temperature",
                code="unsupported_parameter",
            )
        if budget is not None and req.temperature != 1:
            dropped.append("temperature")  # Anthropic takes no temperature but 1 while thinking
        else:
            body["temperature"] = req.temperature
    if req.top_p is not None:
        if budget is not None and req.top_p < 0.95:
            dropped.append("top_p")  # ... and top_p only from 0.95 up
        else:
            body["top_p"] = req.top_p
    stops = stop_list(req)
    if stops:
        body["stop_sequences"] = stops
    tools = _tools(req)
    choice = _tool_choice(req) if tools else None
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema":
        assert fmt.json_schema is not None  # parse_chat requires it for this type
        schema = fmt.json_schema.schema if len(fmt.json_schema.schema) else {"type": "object"}
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif fmt is not None and fmt.type == "json_object":
        if tools:
            raise bad_request(
                f"response_format 'json_object' together with tools is not supported when the request is served by "
                f"{PROVIDER}; use response_format 'json_schema'.",
                param="response_format",
                code="unsupported_parameter",
            )
        tools = [{"name": JSON_TOOL, "description": "Reply with a JSON object.", "input_schema": {"type": "object"}}]
        choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        body["tools"] = tools
        if choice is not None:
            if budget is not None and choice["type"] in ("any", "tool"):
                raise bad_request(
                    f"reasoning_effort together with a forced tool call (tool_choice 'required' or a named function, "
                    f"or response_format 'json_object') is not supported when the request is served by {PROVIDER}: "
                    "thinking allows tool_choice 'auto' or 'none' only.",
                    param="reasoning_effort",
                    code="unsupported_parameter",
                )
            body["tool_choice"] = choice
    if parsed.stream:
        body["stream"] = True
    return body, dropped
