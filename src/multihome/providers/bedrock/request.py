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
from ..reasoning import thinking_budget
from . import PROFILES, profile_id

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
_PROFILE_GEOS = frozenset(prefix[:-1] for prefix, _, _ in PROFILES)
# Without a client limit, Claude's answer keeps this many tokens on top of its thinking budget.
DEFAULT_ANSWER_TOKENS = 4096
_EMPTY_SCHEMA = msgspec.Raw(b'{"type":"object","properties":{}}')
_OBJECT_SCHEMA = '{"type":"object"}'


def _base_id(model: str) -> str:
    base = profile_id(model)
    return base.split(".", 1)[1] if base.split(".", 1)[0] in _PROFILE_GEOS else base


def is_claude(model: str) -> bool:
    """Whether `model` (a base id, an inference profile or an ARN) is Claude: Converse hands Claude
    Anthropic's `thinking` through additionalModelRequestFields and returns its reasoningContent."""
    return _base_id(model).startswith("anthropic.")


# gpt-oss on Converse takes OpenAI's chat fields Converse has no place for in additionalModelRequestFields
# (AWS, "OpenAI models"), reasoning_effort among them; it knows these three levels.
_GPT_OSS_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def _model_reasoning(model: str, effort: str | None) -> dict[str, Any] | None:
    """additionalModelRequestFields for a non-Claude model's reasoning, or None (reported dropped):
    gpt-oss takes `reasoning_effort`; DeepSeek-R1 always reasons and takes no setting."""
    if effort is not None and _base_id(model).startswith("openai.gpt-oss") and effort in _GPT_OSS_EFFORTS:
        return {"reasoning_effort": _GPT_OSS_EFFORTS[effort]}
    return None


def converse_body(parsed: ParsedChat, model: str = "") -> tuple[bytes, list[str]]:
    """The Converse JSON body for `parsed` and the parameters dropped on the way (reported)."""
    req = parsed.request
    dropped = _check_top_level(parsed)
    claude = is_claude(model)
    body: dict[str, Any] = {}
    system = [
        {"text": t} for t in (canonical_in.text_of(m) for m in req.messages if m.role in ("system", "developer")) if t
    ]
    if system:
        body["system"] = system
    messages, has_tool_blocks, tool_names, named = _messages(req.messages, claude)
    body["messages"] = messages
    if named:
        dropped.append("messages[].name")
    if not claude and any(m.thinking_blocks for m in req.messages):
        dropped.append("messages[].thinking_blocks")  # only Claude can take its signed reasoning back
    budget = limit = None
    if claude:
        budget, limit = thinking_budget(
            req.reasoning_effort, canonical_in.max_output_tokens(req), DEFAULT_ANSWER_TOKENS, parsed.thinking_budget
        )
    extra = None if claude else _model_reasoning(model, req.reasoning_effort)
    if budget is not None or extra is not None:
        if "reasoning_effort" in dropped:
            dropped.remove("reasoning_effort")
    if budget is not None:
        _think(req, body, budget, dropped)
    elif extra is not None:
        body["additionalModelRequestFields"] = extra
    inference = _inference_config(req, dropped, limit, thinking=budget is not None)
    if inference:
        body["inferenceConfig"] = inference
    tool_config = _tool_config(req, has_tool_blocks, tool_names, dropped)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    output = _output_config(req)
    if output is not None:
        body["outputConfig"] = output
    return _encode(body), dropped


def _think(req: ChatRequest, body: dict[str, Any], budget: int, dropped: list[str]) -> None:
    """Claude's extended thinking through Converse, under Anthropic's rules (docs/translation/reasoning.md)."""
    choice = req.tool_choice
    if req.tools and (choice == "required" or (choice is not None and not isinstance(choice, str))):
        raise bad_request(
            "reasoning_effort together with a forced tool call (tool_choice 'required' or a named function) is not "
            f"supported when the request is served by Claude through {PROVIDER}: thinking allows tool_choice 'auto' "
            "or 'none' only.",
            param="reasoning_effort",
            code="unsupported_parameter",
        )
    body["additionalModelRequestFields"] = {"thinking": {"type": "enabled", "budget_tokens": budget}}


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


def _inference_config(
    req: ChatRequest, dropped: list[str], limit: int | None = None, *, thinking: bool = False
) -> dict[str, Any]:
    """`limit`: maxTokens when thinking raised it; while thinking Claude takes temperature 1 and
    topP >= 0.95 only, so other values are dropped (reported) rather than refused upstream."""
    cfg: dict[str, Any] = {}
    limit = limit if limit is not None else canonical_in.max_output_tokens(req)
    if limit is not None:
        cfg["maxTokens"] = limit
    if req.temperature is not None:
        if thinking and req.temperature != 1:
            dropped.append("temperature")
        else:
            if req.temperature > MAX_TEMPERATURE:
                dropped.append("temperature")  # reported: clamped to Bedrock's maximum
            cfg["temperature"] = min(req.temperature, MAX_TEMPERATURE)
    if req.top_p is not None:
        if thinking and req.top_p < 0.95:
            dropped.append("top_p")
        else:
            cfg["topP"] = req.top_p
    stops = canonical_in.stop_list(req)
    if stops:
        cfg["stopSequences"] = stops
    return cfg


def _messages(messages: list[Message], claude: bool = False) -> tuple[list[dict[str, Any]], bool, list[str], bool]:
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
            blocks = _assistant_blocks(m, i, tool_names, claude)
            has_tool_blocks = has_tool_blocks or bool(m.tool_calls)
            turn_role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(m)]
            has_tool_blocks = True
            turn_role = "user"
        else:  # "function": the deprecated function-calling protocol
            raise canonical_in.unsupported(f"messages[{i}].role", PROVIDER + " (use tool messages)", "function")
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
            raise canonical_in.unsupported(f"{where}.type", PROVIDER, part.type)
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


def _assistant_blocks(m: Message, i: int, tool_names: list[str], claude: bool = False) -> list[dict[str, Any]]:
    # Claude's signed reasoning first, unchanged (Converse's reasoningContent); unsigned blocks stay behind.
    blocks: list[dict[str, Any]] = [
        {"reasoningContent": {"reasoningText": {"text": b.thinking, "signature": b.signature}}}
        if b.type == "thinking"
        else {"reasoningContent": {"redactedContent": b.data}}
        for b in (m.thinking_blocks or () if claude else ())
        if b.type != "thinking" or b.signature
    ]
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
            raise canonical_in.unsupported(f"tools[{i}].type", PROVIDER + " (function tools only)", tool.type)
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
        raise canonical_in.unsupported("tool_choice.type", PROVIDER, choice.type)
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
