"""OpenAI chat request -> Bedrock Converse body.

The parameter rules (mapped / dropped and reported / refused) are in docs/translation/bedrock.md;
the sets below are that table as data, so the doc and the code can be compared line by line.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...schema.chat import ChatRequest, Message, ParsedChat
from ...schema.errors import bad_request
from .. import canonical_in

PROVIDER = "AWS Bedrock"
_encode = msgspec.json.encode

# Top-level fields the translation below honours (or that only steer the gateway).
MAPPED = frozenset(
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
        "n",
    }
)
# Fields whose meaning Bedrock cannot deliver at all: answering without them would be wrong.
REFUSED = {
    "functions": "use 'tools' instead of the deprecated 'functions'",
    "function_call": "use 'tool_choice' instead of the deprecated 'function_call'",
    "audio": "Bedrock Converse does not produce audio output",
    "web_search_options": "Bedrock Converse has no built-in web search",
}
# Bedrock temperature is 0..1; OpenAI's is 0..2. Values above 1 are clamped and reported.
MAX_TEMPERATURE = 1.0

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_EMPTY_SCHEMA = msgspec.Raw(b'{"type":"object","properties":{}}')
_OBJECT_SCHEMA = '{"type":"object"}'


def converse_body(parsed: ParsedChat) -> tuple[bytes, list[str]]:
    """The Converse JSON body for `parsed` and the parameters dropped on the way (reported)."""
    req = parsed.request
    dropped = _check_top_level(parsed)
    body: dict[str, Any] = {}
    system = [
        {"text": t} for t in (canonical_in.text_of(m) for m in req.messages if m.role in ("system", "developer")) if t
    ]
    if system:
        body["system"] = system
    messages, has_tool_blocks, tool_names, named = _messages(req.messages)
    body["messages"] = messages
    if named:
        dropped.append("messages[].name")
    inference = _inference_config(req, dropped)
    if inference:
        body["inferenceConfig"] = inference
    tool_config = _tool_config(req, has_tool_blocks, tool_names, dropped)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    output = _output_config(req)
    if output is not None:
        body["outputConfig"] = output
    return _encode(body), dropped


def _check_top_level(parsed: ParsedChat) -> list[str]:
    dropped = []
    for key, raw in parsed.raw.items():
        if key in MAPPED:
            continue
        value = bytes(raw)
        if value in (b"null", b"false"):
            continue  # an explicit default asks for nothing
        if key in REFUSED:
            raise canonical_in.unsupported(key, PROVIDER + f" ({REFUSED[key]})")
        dropped.append(key)
    req = parsed.request
    if req.n is not None and req.n > 1:
        raise canonical_in.unsupported("n", PROVIDER + " (one choice per call; send n separate requests)")
    if req.parallel_tool_calls is False and req.tools:
        dropped.append("parallel_tool_calls")
    return dropped


def _inference_config(req: ChatRequest, dropped: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    limit = canonical_in.max_output_tokens(req)
    if limit is not None:
        cfg["maxTokens"] = limit
    if req.temperature is not None:
        if req.temperature > MAX_TEMPERATURE:
            dropped.append("temperature")  # reported: clamped to Bedrock's maximum
        cfg["temperature"] = min(req.temperature, MAX_TEMPERATURE)
    if req.top_p is not None:
        cfg["topP"] = req.top_p
    stops = canonical_in.stop_list(req)
    if stops:
        cfg["stopSequences"] = stops
    return cfg


def _messages(messages: list[Message]) -> tuple[list[dict[str, Any]], bool, list[str], bool]:
    """Bedrock turns: user/assistant only, alternating, tool results inside user turns.

    Consecutive messages that land on the same role are merged into one turn (Bedrock rejects
    two user turns in a row), which also puts consecutive tool results into one user turn.
    """
    turns: list[dict[str, Any]] = []
    has_tool_blocks = False
    tool_names: list[str] = []
    named = False
    for i, m in enumerate(messages):
        role = m.role
        if role in ("system", "developer"):
            continue
        named = named or m.name is not None
        if role == "user":
            blocks = _user_blocks(m, i)
            turn_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(m, i, tool_names)
            has_tool_blocks = has_tool_blocks or bool(m.tool_calls)
            turn_role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(m)]
            has_tool_blocks = True
            turn_role = "user"
        else:  # "function": the deprecated function-calling protocol
            raise canonical_in.unsupported(f"messages[{i}].role=function", PROVIDER + " (use tool messages)")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    if not turns:
        raise bad_request("The conversation needs at least one user message.", param="messages")
    return turns, has_tool_blocks, tool_names, named


def _user_blocks(m: Message, i: int) -> list[dict[str, Any]]:
    blocks = []
    for j, part in enumerate(canonical_in.parts_of(m)):
        where = f"messages[{i}].content[{j}]"
        if part.type == "text":
            if part.text:
                blocks.append({"text": part.text})
        elif part.type == "image_url":
            assert part.image_url is not None  # parse_chat refuses an image_url part without one
            blocks.append(_image(part.image_url.url, where))
        else:
            raise canonical_in.unsupported(f"{where}.type={part.type}", PROVIDER)
    return blocks


def _image(url: str, where: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        raise bad_request(
            f"{where}: AWS Bedrock does not fetch image URLs; send the image inline as a base64 data URL "
            "(data:image/png;base64,...).",
            param=where,
            code="unsupported_parameter",
        )
    media, _raw = canonical_in.data_url(url, where)  # validates the base64
    fmt = _IMAGE_FORMATS.get(media.lower())
    if fmt is None:
        raise bad_request(
            f"{where}: image type '{media}' is not supported by AWS Bedrock (png, jpeg, gif, webp).", param=where
        )
    # The data URL already holds base64, which is exactly what Bedrock's JSON wants for `bytes`.
    return {"image": {"format": fmt, "source": {"bytes": url.partition(";base64,")[2]}}}


def _assistant_blocks(m: Message, i: int, tool_names: list[str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = m.content
    if isinstance(content, str):
        if content:
            blocks.append({"text": content})
    elif content:
        for part in content:
            text = part.text if part.type == "text" else part.refusal if part.type == "refusal" else None
            if text:
                blocks.append({"text": text})
    for k, call in enumerate(m.tool_calls or ()):
        args = canonical_in.tool_arguments(call.function.arguments, f"messages[{i}].tool_calls[{k}]")
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": args}})
        tool_names.append(call.function.name)
    return blocks


def _tool_result(m: Message) -> dict[str, Any]:
    text = canonical_in.text_of(m)
    # Bedrock rejects an empty toolResult content list; an empty tool answer is sent as a space.
    return {"toolResult": {"toolUseId": m.tool_call_id, "content": [{"text": text or " "}], "status": "success"}}


def _tool_specs(req: ChatRequest) -> list[dict[str, Any]]:
    specs = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function" or tool.function is None:
            raise canonical_in.unsupported(f"tools[{i}].type={tool.type}", PROVIDER + " (function tools only)")
        fn = tool.function
        spec: dict[str, Any] = {
            "name": fn.name,
            "inputSchema": {"json": fn.parameters if len(fn.parameters) else _EMPTY_SCHEMA},
        }
        if fn.description:
            spec["description"] = fn.description
        if fn.strict:
            spec["strict"] = True
        specs.append({"toolSpec": spec})
    return specs


def _tool_config(
    req: ChatRequest, has_tool_blocks: bool, history_names: list[str], dropped: list[str]
) -> dict[str, Any] | None:
    choice = req.tool_choice
    specs = _tool_specs(req)
    if choice == "none" or not specs:
        if not has_tool_blocks:
            return None
        # Bedrock has no "none" and rejects tool blocks in the history without a toolConfig:
        # declare the tools (or, with none given, the names the history used) without a toolChoice.
        if choice == "none":
            dropped.append("tool_choice")
        if not specs:
            names = list(dict.fromkeys(history_names))
            specs = [{"toolSpec": {"name": n, "inputSchema": {"json": _EMPTY_SCHEMA}}} for n in names]
        return {"tools": specs} if specs else None
    cfg: dict[str, Any] = {"tools": specs}
    if choice is None or choice == "auto":
        cfg["toolChoice"] = {"auto": {}}
    elif choice == "required":
        cfg["toolChoice"] = {"any": {}}
    elif isinstance(choice, str):
        raise bad_request(f"'tool_choice' value '{choice}' is not supported.", param="tool_choice")
    elif choice.type == "function" and choice.function is not None:
        cfg["toolChoice"] = {"tool": {"name": choice.function.name}}
    else:
        raise canonical_in.unsupported(f"tool_choice.type={choice.type}", PROVIDER)
    return cfg


def _output_config(req: ChatRequest) -> dict[str, Any] | None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        js = fmt.json_schema
        schema = bytes(js.schema).decode() if len(js.schema) else _OBJECT_SCHEMA
        structure: dict[str, Any] = {"schema": schema, "name": js.name}
        if js.description:
            structure["description"] = js.description
    else:  # json_object: any JSON object
        structure = {"schema": _OBJECT_SCHEMA, "name": "json_object"}
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": structure}}}
