"""Gemini wire shapes for the simulator: a `GenerateContentRequest` is read into the OpenAI-shaped
body the shared planner understands (so every kind answers by the same deterministic rules), and
the plan is rendered back as `GenerateContentResponse` bodies and stream chunks."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

import msgspec

from ..chat import CONTENT, FINAL, BadRequest, ChatPlan
from ..content import split_words
from .thinking import Thinking, signature, text_signature

_encode = msgspec.json.encode
_TOP = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
    "model",
}
_GEN = {
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
}
GEMINI_MAX_STOP = 5  # generationConfig.stopSequences takes up to 5 (OpenAI's stop takes 4)
_FINISH = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
_SAFE_RATINGS = [
    {"category": c, "probability": "NEGLIGIBLE"}
    for c in (
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    )
]
BLOCKED_RATINGS = [
    {**r, "probability": "HIGH", "blocked": True} if r["category"] == "HARM_CATEGORY_DANGEROUS_CONTENT" else r
    for r in _SAFE_RATINGS
]


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="INVALID_ARGUMENT")


def _unknown(name: str, where: str = "") -> BadRequest:
    at = f"at '{where}'" if where else ""
    return _invalid(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _lower_types(schema: Any) -> Any:
    """OpenAPI-style `parameters` use upper-case types (STRING); the planner reads JSON Schema."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def _part_to_openai(part: Any, where: str) -> dict | None:
    if not isinstance(part, dict) or not part:
        raise _invalid(f"* {where}: a part must set one of text, inlineData, fileData, functionCall, functionResponse.")
    if "text" in part:
        if part.get("thought") is True:
            return None  # a thought summary sent back is not part of the conversation's text
        return {"type": "text", "text": part["text"]}
    if "inlineData" in part:
        blob = part["inlineData"]
        if (
            not isinstance(blob, dict)
            or not isinstance(blob.get("mimeType"), str)
            or not isinstance(blob.get("data"), str)
        ):
            raise _invalid(f"* {where}.inline_data: mimeType and data are required.")
        try:
            base64.b64decode(blob["data"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(
                f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed."
            ) from None
        if blob["mimeType"].startswith("image/"):
            return {"type": "image_url", "image_url": {"url": f"data:{blob['mimeType']};base64,{blob['data']}"}}
        return None
    if "fileData" in part:
        fd = part["fileData"]
        if (
            not isinstance(fd, dict)
            or not isinstance(fd.get("fileUri"), str)
            or not isinstance(fd.get("mimeType"), str)
        ):
            raise _invalid(f"* {where}.file_data: fileUri and mimeType are required.")
        if fd["mimeType"].startswith("image/"):
            return {"type": "image_url", "image_url": {"url": fd["fileUri"]}}
        return None
    for key in part:
        if key not in ("thought", "thoughtSignature", "functionCall", "functionResponse"):
            raise _unknown(key, where)
    return None


def to_openai(body: dict) -> dict:
    """A GenerateContentRequest as the OpenAI chat body the planner takes. Raises BadRequest."""
    for key in body:
        if key not in _TOP:
            raise _unknown(key)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified")
    messages: list[dict] = []
    system = body.get("systemInstruction")
    if system is not None:
        system_parts = system.get("parts") if isinstance(system, dict) else None
        if not isinstance(system_parts, list):
            raise _invalid("* GenerateContentRequest.system_instruction.parts: must be a list of parts")
        messages.append(
            {"role": "system", "content": " ".join(p.get("text", "") for p in system_parts if isinstance(p, dict))}
        )
    pending_calls: list[str] = []  # names of the previous model turn's function calls
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
            raise _invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
        role = content.get("role", "user")
        if role not in ("user", "model"):
            raise _invalid(f"Please use a valid role: user, model. (got {role!r} at {where})")
        calls: list[dict[str, Any]] = []
        responses: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(content["parts"]):
            converted = _part_to_openai(part, f"{where}.parts[{j}]")
            if converted is not None:
                parts.append(converted)
            if isinstance(part, dict) and "functionCall" in part:
                fc = part["functionCall"]
                if role != "model" or not isinstance(fc, dict) or not isinstance(fc.get("name"), str):
                    raise _invalid(f"* {where}.parts[{j}].function_call: only model turns carry calls, with a name.")
                args = fc.get("args", {})
                if not isinstance(args, dict):
                    raise _invalid(
                        f"Invalid value at '{where}.parts[{j}].function_call.args' (type.googleapis.com/google.protobuf.Struct)"
                    )
                calls.append(
                    {
                        "id": f"{fc['name']}#{len(calls)}",
                        "type": "function",
                        "function": {"name": fc["name"], "arguments": _encode(args).decode()},
                    }
                )
            if isinstance(part, dict) and "functionResponse" in part:
                fr = part["functionResponse"]
                if (
                    not isinstance(fr, dict)
                    or not isinstance(fr.get("name"), str)
                    or not isinstance(fr.get("response"), dict)
                ):
                    raise _invalid(
                        f"* {where}.parts[{j}].function_response: name and response (an object) are required."
                    )
                responses.append(fr)
        if responses:
            if role != "user" or not pending_calls:
                raise _invalid(
                    "Please ensure that function response turn comes immediately after a function call turn."
                )
            if len(responses) != len(pending_calls):
                raise _invalid(
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn."
                )
            if sorted(r["name"] for r in responses) != sorted(pending_calls):
                raise _invalid("A function response does not name a function called in the previous turn.")
            for r in responses:
                messages.append({"role": "tool", "tool_call_id": r["name"], "content": _encode(r["response"]).decode()})
        pending_calls = [c["function"]["name"] for c in calls]
        if role == "model":
            text = "".join(p.get("text", "") for p in parts if p["type"] == "text")
            msg: dict = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
        elif parts:
            messages.append({"role": "user", "content": parts})
    out: dict = {"messages": messages}
    _tools(body, out)
    _generation(body.get("generationConfig"), out)
    return out


def _tools(body: dict, out: dict) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    fns: list[dict[str, Any]] = []
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        for j, decl in enumerate(tool.get("functionDeclarations", []) if isinstance(tool, dict) else []):
            where = f"tools[{i}].function_declarations[{j}]"
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str) or not decl["name"]:
                raise _invalid(f"* GenerateContentRequest.{where}.name: [FIELD_INVALID] Invalid function name.")
            if "parameters" in decl and "parametersJsonSchema" in decl:
                raise _invalid(
                    f"* GenerateContentRequest.{where}: parameters and parameters_json_schema cannot both be set."
                )
            for key in decl:
                if key not in ("name", "description", "parameters", "parametersJsonSchema", "response", "behavior"):
                    raise _unknown(key, where)
            params = (
                decl.get("parametersJsonSchema")
                or _lower_types(decl.get("parameters"))
                or {"type": "object", "properties": {}}
            )
            fns.append({"type": "function", "function": {"name": decl["name"], "parameters": params}})
    if fns:
        out["tools"] = fns
    cfg = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if not fns or not isinstance(cfg, dict):
        return
    mode = cfg.get("mode", "AUTO")
    names = cfg.get("allowedFunctionNames")
    if names and mode not in ("ANY", "VALIDATED"):
        raise _invalid(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
            "only allowed when mode is ANY."
        )
    known = {f["function"]["name"] for f in fns}
    for n in names or ():
        if n not in known:
            raise _invalid(f"* allowed_function_names: {n!r} is not a declared function.")
    if mode == "NONE":
        out["tool_choice"] = "none"
    elif mode in ("ANY", "VALIDATED") and names and len(names) == 1:
        out["tool_choice"] = {"type": "function", "function": {"name": names[0]}}
    elif mode in ("ANY", "VALIDATED") and names:
        out["tool_choice"] = {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": n}} for n in names],
            },
        }
    elif mode in ("ANY", "VALIDATED"):
        out["tool_choice"] = "required"
    elif mode != "AUTO":
        raise _invalid(f"Invalid value at 'tool_config.function_calling_config.mode': {mode!r}")


def _generation(cfg: Any, out: dict) -> None:
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise _invalid("Invalid value at 'generation_config': expected an object.")
    for key in cfg:
        if key not in _GEN:
            raise _unknown(key, "generation_config")
    temp = cfg.get("temperature")
    if temp is not None and not (isinstance(temp, (int, float)) and 0 <= temp <= 2):
        raise _invalid("* GenerateContentRequest.generation_config.temperature: must be between 0 and 2.")
    if cfg.get("maxOutputTokens") is not None:
        out["max_tokens"] = cfg["maxOutputTokens"]
    stops = cfg.get("stopSequences")
    if stops is not None:
        if not isinstance(stops, list) or len(stops) > GEMINI_MAX_STOP:
            raise _invalid(
                "* GenerateContentRequest.generation_config.stop_sequences: "
                f"at most {GEMINI_MAX_STOP} stop sequences are allowed."
            )
        out["stop"] = stops
    if cfg.get("candidateCount") is not None:
        out["n"] = cfg["candidateCount"]
    mime = cfg.get("responseMimeType")
    schema = cfg.get("responseJsonSchema")
    if schema is None and cfg.get("responseSchema") is not None:
        schema = _lower_types(cfg["responseSchema"])
    if schema is not None and mime != "application/json":
        raise _invalid(
            "* GenerateContentRequest.generation_config.response_mime_type: must be application/json "
            "when a response schema is set."
        )
    if schema is not None:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    elif mime == "application/json":
        out["response_format"] = {"type": "json_object"}


# -- rendering -----------------------------------------------------------------------------


def usage_metadata(plan: ChatPlan, final: bool = True, thinking: Thinking | None = None) -> dict:
    meta = {
        "promptTokenCount": plan.prompt_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.prompt_tokens}],
    }
    if final:
        thoughts = thinking.tokens if thinking is not None else 0
        meta["candidatesTokenCount"] = plan.completion_tokens
        if thoughts:
            meta["thoughtsTokenCount"] = thoughts  # apart from candidatesTokenCount, in the total
        meta["totalTokenCount"] = plan.prompt_tokens + plan.completion_tokens + thoughts
    else:
        meta["totalTokenCount"] = plan.prompt_tokens
    return meta


def _call_parts(calls: list[dict], thinking: Thinking | None = None) -> list[dict]:
    parts: list[dict[str, Any]] = [
        {"functionCall": {"name": c["function"]["name"], "args": msgspec.json.decode(c["function"]["arguments"])}}
        for c in calls
    ]
    if thinking is not None and thinking.signed and parts:
        # Only the first function call of an answer carries the signature (parallel calls: the first).
        parts[0]["thoughtSignature"] = signature(parts[0]["functionCall"])
    return parts


def _thought_parts(thinking: Thinking | None) -> list[dict]:
    return [{"text": thinking.summary, "thought": True}] if thinking is not None and thinking.include else []


def _response_id(plan: ChatPlan) -> str:
    return plan.id.removeprefix("chatcmpl-")[:22]


def render_response(plan: ChatPlan, model: str, thinking: Thinking | None = None) -> dict:
    candidates = []
    for i, c in enumerate(plan.choices):
        cand: dict = {"index": i, "finishReason": _FINISH[c.finish_reason]}
        if c.finish_reason == "content_filter":
            cand["safetyRatings"] = BLOCKED_RATINGS  # a blocked candidate carries no content
        else:
            answer = _call_parts(c.tool_calls, thinking) if c.tool_calls else [_text_part(c.content or "", thinking)]
            cand["content"] = {"parts": [*_thought_parts(thinking), *answer], "role": "model"}
            cand["avgLogprobs"] = -0.1
        candidates.append(cand)
    return {
        "candidates": candidates,
        "usageMetadata": usage_metadata(plan, thinking=thinking),
        "modelVersion": model,
        "responseId": _response_id(plan),
    }


def _text_part(text: str, thinking: Thinking | None) -> dict:
    """A text answer's last part; a model that signs (Gemini 3) signs it too (optional to send back)."""
    part: dict = {"text": text}
    if thinking is not None and thinking.signed:
        part["thoughtSignature"] = text_signature(text)
    return part


def prompt_blocked(plan: ChatPlan, model: str) -> dict:
    return {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": BLOCKED_RATINGS},
        "usageMetadata": usage_metadata(plan, final=False),
        "modelVersion": model,
        "responseId": _response_id(plan),
    }


def stream_chunks(plan: ChatPlan, model: str, thinking: Thinking | None = None) -> Iterator[tuple[str, int, dict]]:
    """(stage, candidate, chunk): the thought summary's words first (`thought: true`), one chunk per
    word, all of a turn's function calls in one chunk (as Gemini sends them), then a final chunk with
    finishReason and the whole usage (a Gemini 3 text answer's signature on its empty last part)."""
    head = {"modelVersion": model, "responseId": _response_id(plan)}
    running = usage_metadata(plan, final=False)
    for i, c in enumerate(plan.choices):
        for thought in _thought_parts(thinking):
            for word in split_words(thought["text"]):
                yield (
                    CONTENT,
                    i,
                    {
                        "candidates": [
                            {"content": {"parts": [{"text": word, "thought": True}], "role": "model"}, "index": i}
                        ],
                        "usageMetadata": running,
                        **head,
                    },
                )
        if c.tool_calls:
            parts = _call_parts(c.tool_calls, thinking)
            yield (
                CONTENT,
                i,
                {
                    "candidates": [{"content": {"parts": parts, "role": "model"}, "index": i}],
                    "usageMetadata": running,
                    **head,
                },
            )
        else:
            for word in c.pieces or split_words(c.content or ""):
                yield (
                    CONTENT,
                    i,
                    {
                        "candidates": [{"content": {"parts": [{"text": word}], "role": "model"}, "index": i}],
                        "usageMetadata": running,
                        **head,
                    },
                )
        last = _text_part("", thinking) if not c.tool_calls else {"text": ""}
        final: dict = {
            "content": {"parts": [last], "role": "model"},
            "finishReason": _FINISH[c.finish_reason],
            "index": i,
        }
        if c.finish_reason == "content_filter":
            final = {"finishReason": "SAFETY", "index": i, "safetyRatings": BLOCKED_RATINGS}
        yield FINAL, i, {"candidates": [final], "usageMetadata": usage_metadata(plan, thinking=thinking), **head}
