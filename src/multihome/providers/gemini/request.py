"""OpenAI chat request -> Gemini `GenerateContentRequest` body (Gemini API and Vertex AI alike).

Every top-level OpenAI field has one rule, declared as data below: mapped, dropped (reported in
`x-multihome-dropped-params`) or refused with a 400. docs/translation/gemini.md is the table.
"""

from __future__ import annotations

import base64
import mimetypes
from typing import Any

import msgspec

from ...schema.chat import ChatRequest, Message, ParsedChat
from ...schema.errors import ApiError, bad_request, echo
from .. import canonical_in as cin
from .thinking import SKIP_SIGNATURE, gemini_3, thinking_config

PROVIDER = "Google Gemini"

# Fields read by the translation below.
MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "response_format",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "reasoning_effort",  # thinkingConfig (thinking.py)
    }
)
# Fields Gemini has no equivalent for; the answer is still right without them, so they are
# dropped and reported. The value is the no-op value that is not worth reporting.
DROPPED = {
    "parallel_tool_calls": True,  # Gemini decides on parallel calls itself
    "logprobs": False,  # Gemini logprobs exist but are not translated back
    "top_logprobs": None,
    "logit_bias": None,
    "user": None,
    "safety_identifier": None,
    "prompt_cache_key": None,
    "metadata": None,
    "store": False,
    "service_tier": None,
    "verbosity": None,
    "prediction": None,
}
# Fields whose absence would make the answer wrong (another kind of output was asked for).
REFUSED = frozenset({"audio", "web_search_options", "functions", "function_call"})

# Gemini API accepts fileData URIs it issued itself (the Files API); Vertex also reads gs:// and https.
_GEMINI_FILE_PREFIX = "https://generativelanguage.googleapis.com/"
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}
_encode = msgspec.json.encode


def check_params(parsed: ParsedChat) -> list[str]:
    """Apply the rule table to the top-level fields; returns the dropped names (sorted)."""
    dropped = []
    for name, raw in parsed.raw.items():
        if name in MAPPED:
            continue
        value = cin.raw_json(raw, name)
        if value is None:
            continue
        if name in REFUSED or (name == "modalities" and value != ["text"]):
            raise cin.unsupported(name, PROVIDER)
        if name == "modalities":
            continue
        if name in DROPPED and value == DROPPED[name]:
            continue
        dropped.append(name)
    return sorted(dropped)


def request_body(parsed: ParsedChat, *, vertex: bool, model: str = "") -> dict[str, Any]:
    req = parsed.request
    if parsed.stream and (req.n or 1) > 1:
        raise bad_request(
            f"'n' greater than 1 cannot be streamed when the request is served by {PROVIDER}.",
            param="n",
            code="unsupported_parameter",
        )
    body: dict[str, Any] = {"contents": contents(req.messages, vertex=vertex, sign=gemini_3(model))}
    system = cin.system_text(req.messages)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    tools, tool_config = tool_fields(req, parsed.raw)
    if tools:
        body["tools"] = tools
    if tool_config:
        body["toolConfig"] = tool_config
    config = generation_config(req, parsed.raw)
    thinking = thinking_config(parsed, model)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    return body


# -- messages ------------------------------------------------------------------------------


def contents(messages: list[Message], *, vertex: bool, sign: bool = False) -> list[dict[str, Any]]:
    """Turns in Gemini's user/model roles; consecutive turns of the same role are merged. `sign`: the
    model requires a thought signature on each turn's first function call (Gemini 3)."""
    names: dict[str, str] = {}  # tool_call_id -> function name (Gemini matches results by name)
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if msg.role in ("system", "developer"):
            continue
        if msg.role == "user":
            role, parts = "user", _user_parts(msg, where, vertex)
        elif msg.role == "assistant":
            role, parts = "model", _model_parts(msg, where, names, sign)
        elif msg.role == "tool":
            role, parts = "user", [_function_response(msg, where, names)]
        else:  # "function": the deprecated predecessor of tool messages
            raise cin.unsupported(f"{where}.role", PROVIDER, "function")
        if not parts:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    if not out:
        raise bad_request(
            f"The request has no user or assistant message; {PROVIDER} needs at least one besides the system prompt.",
            param="messages",
        )
    return out


def _user_parts(msg: Message, where: str, vertex: bool) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(cin.parts_of(msg)):
        p = f"{where}.content[{j}]"
        if part.type == "text":
            if part.text:
                parts.append({"text": part.text})
        elif part.type == "image_url":
            assert part.image_url is not None  # parse_chat refuses an image_url part without one
            parts.append(_image(part.image_url.url, p, vertex))
        elif part.type == "input_audio":
            audio = cin.raw_json(part.input_audio, f"{p}.input_audio") if len(part.input_audio) else {}
            fmt = audio.get("format") if isinstance(audio, dict) else None
            mime = _AUDIO_MIME.get(fmt) if isinstance(fmt, str) else None  # a list or object is no format
            if mime is None or not isinstance(audio.get("data"), str):
                raise bad_request(f"{p}.input_audio needs 'data' (base64) and 'format' wav or mp3.", param=p)
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif part.type == "file":
            parts.append(_file(part.file, p))
        else:
            raise cin.unsupported(f"{p}.type", PROVIDER, part.type)
    return parts


def _image(url: str, where: str, vertex: bool) -> dict[str, Any]:
    if url.startswith("data:"):
        mime, data = cin.data_url(url, where)
        return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
    allowed = url.startswith(("https://", "gs://")) if vertex else url.startswith(_GEMINI_FILE_PREFIX)
    if not allowed:
        what = "https:// or gs:// URLs" if vertex else "data URLs or Gemini Files API URIs"
        raise bad_request(f"{where}: images must be {what} when the request is served by {PROVIDER}.", param=where)
    guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
    if guessed is None or not guessed.startswith("image/"):
        raise bad_request(
            f"{where}: the image type cannot be told from the URL (no .png/.jpg/.webp/... ending); "
            "send it as a base64 data URL instead.",
            param=where,
        )
    return {"fileData": {"mimeType": guessed, "fileUri": url}}


def _file(raw: msgspec.Raw, where: str) -> dict[str, Any]:
    file = cin.raw_json(raw, f"{where}.file") if len(raw) else {}
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise bad_request(
            f"{where}: only inline files (file.file_data as a base64 data URL) can be sent to {PROVIDER}.", param=where
        )
    mime, payload = cin.data_url(data, where)
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(payload).decode()}}


def _model_parts(msg: Message, where: str, names: dict[str, str], sign: bool = False) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = cin.text_of(msg) or msg.refusal
    if text:
        parts.append({"text": text})
    calls = msg.tool_calls or ()
    for j, call in enumerate(calls):
        names[call.id] = call.function.name
        args = cin.tool_arguments(call.function.arguments, f"{where}.tool_calls[{j}]")
        part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
        signature = call.thought_signature
        if signature:
            part["thoughtSignature"] = signature  # Gemini's, byte for byte, on the part it came with
        elif sign and j == 0 and not any(c.thought_signature for c in calls):
            part["thoughtSignature"] = SKIP_SIGNATURE  # a call Gemini did not sign (another model's)
        parts.append(part)
    return parts


def _function_response(msg: Message, where: str, names: dict[str, str]) -> dict[str, Any]:
    name = names.get(msg.tool_call_id or "")
    if name is None:
        raise bad_request(
            f"{where}.tool_call_id '{echo(msg.tool_call_id)}' does not match a tool call of an earlier assistant message; "
            f"{PROVIDER} matches tool results to calls by function name, so the call must be in the history.",
            param=f"{where}.tool_call_id",
        )
    text = cin.text_of(msg)
    try:
        value = cin.raw_json(text, where) if text else None
    except ApiError:
        value = None  # not JSON (or not readable as such): sent as text, wrapped below
    # functionResponse.response must be a JSON object: anything else is wrapped (documented).
    response = value if isinstance(value, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


# -- tools ---------------------------------------------------------------------------------


def tool_fields(
    req: ChatRequest, raw: dict[str, msgspec.Raw]
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    declarations = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function" or tool.function is None:
            raise cin.unsupported(f"tools[{i}].type", PROVIDER, tool.type)
        fn = tool.function
        decl: dict[str, Any] = {"name": fn.name}
        if fn.description:
            decl["description"] = fn.description
        if len(fn.parameters):
            # parametersJsonSchema takes JSON Schema as is: no lossy conversion to OpenAPI Schema.
            decl["parametersJsonSchema"] = msgspec.Raw(bytes(fn.parameters))
        declarations.append(decl)
    choice = req.tool_choice
    if not declarations:
        return None, None
    names = [d["name"] for d in declarations]
    config: dict[str, Any] | None = None
    if choice == "auto":
        config = {"mode": "AUTO"}
    elif choice == "none":
        config = {"mode": "NONE"}
    elif isinstance(choice, str):  # "required": parse_chat allows only none, auto and required
        config = {"mode": "ANY"}
    elif choice is not None and choice.type == "function":
        if choice.function is None or choice.function.name not in names:
            raise bad_request("tool_choice names a function that is not in 'tools'.", param="tool_choice")
        config = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    elif choice is not None and choice.type == "allowed_tools":
        allowed = cin.raw_json(raw["tool_choice"], "tool_choice").get("allowed_tools")
        allowed = allowed if isinstance(allowed, dict) else {}
        listed = allowed.get("tools")
        picked = [_allowed_name(t) for t in listed if isinstance(t, dict)] if isinstance(listed, list) else []
        picked = [n for n in names if n in picked]
        if not picked:
            raise bad_request("tool_choice.allowed_tools lists no function from 'tools'.", param="tool_choice")
        if allowed.get("mode", "auto") == "required":
            config = {"mode": "ANY", "allowedFunctionNames": picked}
        else:
            # AUTO cannot carry allowedFunctionNames: offer only the allowed declarations instead.
            declarations = [d for d in declarations if d["name"] in picked]
            config = {"mode": "AUTO"}
    elif choice is not None:
        raise cin.unsupported("tool_choice.type", PROVIDER, choice.type)
    return [{"functionDeclarations": declarations}], ({"functionCallingConfig": config} if config else None)


def _allowed_name(tool: dict[str, Any]) -> Any:
    """An allowed_tools entry's function name: `{"type": "function", "function": {"name"}}` or `{"name"}`."""
    fn = tool.get("function")
    return (fn.get("name") if isinstance(fn, dict) else None) or tool.get("name")


# -- generation config ---------------------------------------------------------------------


MAX_STOP_SEQUENCES = 5  # Gemini's generationConfig.stopSequences limit


def generation_config(req: ChatRequest, raw: dict[str, msgspec.Raw]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = cin.max_output_tokens(req)
    if limit is not None:
        config["maxOutputTokens"] = limit
    if req.temperature is not None:
        config["temperature"] = req.temperature  # both 0-2
    if req.top_p is not None:
        config["topP"] = req.top_p
    stop = cin.stop_list(req)
    if stop and len(stop) > MAX_STOP_SEQUENCES:  # the front doors take 4 today; refuse rather than trim
        raise bad_request(
            f"'stop' accepts at most {MAX_STOP_SEQUENCES} sequences when the request is served by {PROVIDER} "
            f"(got {len(stop)}).",
            param="stop",
        )
    if stop:
        config["stopSequences"] = stop
    if req.n is not None and req.n > 1:
        config["candidateCount"] = req.n
    if req.seed is not None:
        config["seed"] = req.seed
    for openai_name, gemini_name in (
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if openai_name in raw:
            value = cin.raw_json(raw[openai_name], openai_name)
            if value is not None:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not -2 <= value <= 2:
                    raise bad_request(f"'{openai_name}' must be a number between -2 and 2.", param=openai_name)
                config[gemini_name] = value
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_object":
        config["responseMimeType"] = "application/json"
    elif fmt is not None and fmt.type == "json_schema":
        config["responseMimeType"] = "application/json"
        schema = fmt.json_schema.schema if fmt.json_schema else msgspec.Raw()
        config["responseJsonSchema"] = msgspec.Raw(bytes(schema)) if len(schema) else {"type": "object"}
    return config
