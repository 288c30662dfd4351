"""Chat completions: validate a request, decide the deterministic reply, render it as an
OpenAI response body or as a sequence of stream chunks. Kind-neutral: the Azure app adds its
content-filter fields on top of what this module renders."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from .content import (
    count_images,
    estimate_tokens,
    fit_words,
    schema_example,
    short_hash,
    split_every,
    split_words,
    text_of,
    truncate_to_tokens,
)
from .faults import Fault

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MAX_PARALLEL_CALLS = 3
_PARALLEL = re.compile(r"\bparallel\b", re.IGNORECASE)
_STEPS = re.compile(r"\bsteps=(\d{1,3})\b")
# A scripted tool call per line of the user's message: `call <function> <arguments, sent verbatim>`.
_SCRIPT = re.compile(r"^call ([A-Za-z0-9_.-]{1,128})(?: (.*))?$", re.MULTILINE)
_encode = msgspec.json.encode


class BadRequest(Exception):
    """A request the provider would reject with 400 (or ``status``)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass(slots=True)
class ChoicePlan:
    content: str | None
    tool_calls: list[dict] | None
    finish_reason: str
    completion_tokens: int
    pieces: list[str] | None = None  # stream deltas when forced by the `chunks` knob


@dataclass(slots=True)
class ChatPlan:
    id: str
    model: str
    choices: list[ChoicePlan]
    prompt_tokens: int
    include_usage: bool
    # Hidden reasoning a reasoning model did (OpenAI's `reasoning_effort`): inside completion_tokens, as OpenAI counts it.
    reasoning_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices) + self.reasoning_tokens

    def usage(self) -> dict[str, Any]:
        ct = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": ct,
            "total_tokens": self.prompt_tokens + ct,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


# -- validation ----------------------------------------------------------------------------


def _opt_int(body: dict, name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"Invalid '{name}': expected an integer between {lo} and {hi}.", name, "invalid_value")
    return v


def _bad_type(param: str, expected: str) -> BadRequest:
    return BadRequest(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


def _validate_content(content: Any, param: str, allow_null: bool) -> None:
    if content is None and allow_null or isinstance(content, str):
        return
    if not isinstance(content, list):
        if allow_null:
            raise _bad_type(param, "a string, an array of content parts or null")
        raise BadRequest(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad_type(p, "an object with a string 'type'")
        kind = part["type"]
        if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
            raise _bad_type(f"{p}.{kind}", "a string")
        if kind == "image_url":
            img = part.get("image_url")
            if not isinstance(img, dict) or not isinstance(img.get("url"), str):
                raise _bad_type(f"{p}.image_url.url", "a string")


def _validate_messages(messages: Any) -> None:
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise _bad_type("messages", "an array")
    if not messages:
        raise BadRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages", "empty_array"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad_type(f"messages[{i}]", "an object")
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise BadRequest(
                f"Invalid value for 'messages[{i}].role': {role!r}.", f"messages[{i}].role", "invalid_value"
            )
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise BadRequest(
                f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                f"messages[{i}].tool_call_id",
                "missing_required_parameter",
            )
        _validate_content(m.get("content"), f"messages[{i}].content", allow_null=role in ("assistant", "function"))
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise _bad_type(f"messages[{i}].tool_calls", "an array")
            for j, tc in enumerate(calls):
                fn = tc.get("function") if isinstance(tc, dict) else None
                if (
                    not isinstance(fn, dict)
                    or not isinstance(fn.get("name"), str)
                    or not isinstance(fn.get("arguments"), str)
                ):
                    raise _bad_type(
                        f"messages[{i}].tool_calls[{j}].function", "an object with string name and arguments"
                    )


def _validate_tools(body: dict) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad_type("tools", "an array")
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("type", "function"), str):
                raise _bad_type(f"tools[{i}]", "an object")
            if t.get("type", "function") == "function":
                fn = t.get("function")
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise _bad_type(f"tools[{i}].function.name", "a string")
                if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
                    raise _bad_type(f"tools[{i}].function.parameters", "an object")
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        pass
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not isinstance(allowed, dict) or not isinstance(allowed.get("tools"), list):
            raise _bad_type("tool_choice.allowed_tools.tools", "an array")
        if allowed.get("mode", "auto") not in ("auto", "required"):
            raise BadRequest(
                "Invalid value for 'tool_choice.allowed_tools.mode'.", "tool_choice.allowed_tools.mode", "invalid_value"
            )
    elif isinstance(choice, dict) and choice.get("type") == "custom":  # a custom tool, named
        custom = choice.get("custom")
        if not isinstance(custom, dict) or not isinstance(custom.get("name"), str):
            raise _bad_type("tool_choice.custom.name", "a string")
    elif isinstance(choice, dict):
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad_type("tool_choice.function.name", "a string")
    else:
        raise BadRequest(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an object.",
            "tool_choice",
            "invalid_value",
        )
    if body.get("parallel_tool_calls") not in (None, True, False):
        raise _bad_type("parallel_tool_calls", "a boolean")


def _validate(body: dict, max_stop: int = 4) -> None:
    _validate_messages(body.get("messages"))
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > max_stop:
            raise BadRequest(
                f"Invalid 'stop': expected a string or an array of up to {max_stop} strings.", "stop", "invalid_value"
            )
    _validate_tools(body)
    if body.get("stream") not in (None, True, False):
        raise _bad_type("stream", "a boolean")
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise _bad_type("stream_options", "an object")
        if not body.get("stream"):
            raise BadRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            raise BadRequest(
                "Invalid 'response_format': type must be text, json_object or json_schema.",
                "response_format.type",
                "invalid_value",
            )
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("name"), str):
                raise BadRequest(
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    "response_format.json_schema.name",
                    "missing_required_parameter",
                )
            if js.get("schema") is not None and not isinstance(js["schema"], dict):
                raise _bad_type("response_format.json_schema.schema", "an object")


# -- planning ------------------------------------------------------------------------------


def _function_tools(tools: list) -> list[dict]:
    out = []
    for t in tools:
        if t.get("type", "function") == "function":
            out.append(t["function"])
    return out


def _choose_tools(body: dict, last_user: str) -> list[dict]:
    """The functions to call, or [] for a text reply."""
    tools = body.get("tools")
    if not tools:
        return []
    choice = body.get("tool_choice")
    if choice == "none":
        return []
    fns = _function_tools(tools)
    if isinstance(choice, dict):
        if choice.get("type") == "allowed_tools":
            allowed = choice["allowed_tools"]
            names = set()
            for t in allowed["tools"]:
                if isinstance(t, dict):
                    fn = t.get("function")
                    names.add(fn.get("name") if isinstance(fn, dict) else t.get("name"))
            fns = [f for f in fns if f["name"] in names]
            choice = allowed.get("mode", "auto")
        elif choice.get("type") == "custom":
            return []  # the simulator makes no custom tool calls: it answers in text
        else:
            name = choice["function"]["name"]
            named = [f for f in fns if f["name"] == name]
            if not named:
                raise BadRequest(
                    f"Invalid value for 'tool_choice': function {name!r} is not in 'tools'.",
                    "tool_choice",
                    "invalid_value",
                )
            return named
    if not fns:
        if choice == "required":
            raise BadRequest(
                "'tool_choice' is 'required' but no function tools were given.", "tool_choice", "invalid_value"
            )
        return []
    if (
        body.get("parallel_tool_calls") is not False
        and len(fns) >= 2
        and choice in (None, "auto", "required")
        and _PARALLEL.search(last_user)
    ):
        return fns[:MAX_PARALLEL_CALLS]
    return fns[:1]


def _tool_results(messages: list) -> int:
    """How many tool results follow the last user message: the calls of a task made so far."""
    done = 0
    for m in reversed(messages):
        if m.get("role") == "user":
            break
        if m.get("role") == "tool":
            done += 1
    return done


def _step_tools(body: dict, messages: list, steps: int) -> list[dict]:
    """`steps=N` in the user's message: a multi-step task. The model calls one function per turn, the
    functions in turn (the k-th call is the (k mod n)-th function), until N tool results follow the
    user's message; then it answers."""
    done = _tool_results(messages)
    fns = _function_tools(body["tools"])
    if done >= steps or not fns:
        return []
    return [fns[done % len(fns)]]


def _scripted(messages: list, script: list[tuple[str, str]]) -> dict | None:
    """The user's `call <name> <arguments>` lines: one call per turn, in order, whether or not the
    function was offered (a model may call any name, and send any text as arguments); then it answers."""
    done = _tool_results(messages)
    if done >= len(script):
        return None
    name, args = script[done]
    return {"name": name, "arguments": args or "{}"}


def _prompt_tokens(body: dict, messages: list, images: int) -> int:
    n = 3
    for m in messages:
        n += 3 + estimate_tokens(text_of(m.get("content")))
        for tc in m.get("tool_calls") or ():
            fn = tc["function"]
            n += estimate_tokens(fn["name"] + fn["arguments"])
    if body.get("tools"):
        n += estimate_tokens(_encode(body["tools"]).decode())
    return n + 85 * images


# Reasoning tokens a simulated reasoning model spends per `reasoning_effort` (hidden, but counted and billed).
REASONING_TOKENS = {"minimal": 8, "low": 16, "medium": 64, "high": 256, "xhigh": 512}


def plan_chat(
    body: dict, *, sim_name: str, model: str, key: bytes, fault: Fault | None = None, max_stop: int = 4
) -> ChatPlan:
    """The deterministic reply to ``body``. ``key`` (the request bytes) seeds the ids."""
    plan = _plan_chat(body, sim_name=sim_name, model=model, key=key, fault=fault, max_stop=max_stop)
    effort = body.get("reasoning_effort")
    plan.reasoning_tokens = REASONING_TOKENS.get(effort, 0) if isinstance(effort, str) else 0
    return plan


def _plan_chat(
    body: dict, *, sim_name: str, model: str, key: bytes, fault: Fault | None = None, max_stop: int = 4
) -> ChatPlan:
    _validate(body, max_stop)  # OpenAI takes 4 stop sequences, Gemini 5
    n = _opt_int(body, "n", 1, 128) or 1
    limit = _opt_int(body, "max_completion_tokens", 1, 1 << 30)
    if limit is None:
        limit = _opt_int(body, "max_tokens", 1, 1 << 30)
    messages: list = body["messages"]
    last = messages[-1]
    last_user = ""
    for m in reversed(messages):
        if m.get("role") == "user":
            last_user = text_of(m.get("content"))
            break
    images = count_images(messages)
    prompt_tokens = _prompt_tokens(body, messages, images)
    so = body.get("stream_options")
    include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
    cid = "chatcmpl-" + short_hash(key)

    steps = _STEPS.search(last_user)
    script = _SCRIPT.findall(last_user) if body.get("tools") and body.get("tool_choice") != "none" else []
    scripted = _scripted(messages, script) if script else None
    if script:
        fns = [scripted] if scripted is not None else []
    elif steps and body.get("tools") and body.get("tool_choice") != "none":
        fns = _step_tools(body, messages, int(steps[1]))
    else:
        fns = [] if last.get("role") == "tool" else _choose_tools(body, last_user)
    filtered = fault is not None and fault.content_filter == "output"
    if fns:
        choices = []
        for i in range(n):
            calls: list[dict[str, Any]] = []
            for j, fn in enumerate(fns):
                args = fn.get("arguments")  # a scripted call's, as written
                if args is None:
                    args = _encode(schema_example(fn.get("parameters") or {"type": "object", "properties": {}}))
                    args = args.decode()
                calls.append(
                    {
                        "id": "call_" + short_hash(key, str(i), str(j)),
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": args},
                    }
                )
            tokens = sum(estimate_tokens(c["function"]["name"] + c["function"]["arguments"]) for c in calls)
            choices.append(ChoicePlan(None, calls, "tool_calls", tokens))
        return ChatPlan(cid, model, choices, prompt_tokens, include_usage)

    if last.get("role") == "tool":
        text = f"Tool {last.get('tool_call_id')} returned: {text_of(last.get('content'))}"
    else:
        text = f"Hello from {sim_name}. You said: {last_user[:40]}"
    if images:
        text += f" I see {images} image(s)."
    pieces = None
    rf = body.get("response_format")
    rf = rf if isinstance(rf, dict) else {}
    rf_type = rf.get("type")
    if rf_type == "json_object":
        text = _encode({"reply": text}).decode()
    elif rf_type == "json_schema":
        text = _encode(schema_example(rf["json_schema"].get("schema") or {"type": "object"})).decode()
    elif fault is not None and fault.chunks:
        pieces = fit_words(text, fault.chunks)
        text = "".join(pieces)

    finish = "stop"
    stop = body.get("stop")
    if stop:
        cut = [i for i in (text.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s) if i >= 0]
        if cut:
            text = text[: min(cut)]
            pieces = None
    if limit is not None and estimate_tokens(text) > limit:
        text = truncate_to_tokens(text, limit)
        finish = "length"
        pieces = None
    if filtered:
        words = split_words(text)
        text = "".join(words[: len(words) // 2])
        finish = "content_filter"
        pieces = None
    tokens = estimate_tokens(text) if text else 0
    choices = [ChoicePlan(text, None, finish, tokens, pieces) for _ in range(n)]
    return ChatPlan(cid, model, choices, prompt_tokens, include_usage)


# -- rendering -----------------------------------------------------------------------------


def render_completion(plan: ChatPlan, created: int, fingerprint: str, top_extra: dict | None = None) -> dict:
    choices = []
    for i, c in enumerate(plan.choices):
        msg: dict[str, Any] = {"role": "assistant", "content": c.content, "refusal": None, "annotations": []}
        if c.tool_calls:
            msg["tool_calls"] = c.tool_calls
        choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": c.finish_reason})
    out = {
        "id": plan.id,
        "object": "chat.completion",
        "created": created,
        "model": plan.model,
        "choices": choices,
        "usage": plan.usage(),
        "system_fingerprint": fingerprint,
    }
    if top_extra:
        out.update(top_extra)
    return out


ROLE, CONTENT, FINAL, USAGE = "role", "content", "final", "usage"
_ARG_PIECE = 16  # characters of tool arguments per stream fragment


def stream_chunks(
    plan: ChatPlan, created: int, fingerprint: str, top_extra: dict | None = None
) -> Iterator[tuple[str, int, dict]]:
    """Yield ``(stage, choice_index, chunk)`` lazily (long streams stay cheap in memory)."""
    base = {
        "id": plan.id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": plan.model,
        "system_fingerprint": fingerprint,
    }
    if top_extra:
        base.update(top_extra)
    usage_null = plan.include_usage

    def chunk(i: int, delta: dict, finish: str | None) -> dict:
        d = dict(base)
        d["choices"] = [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if usage_null:
            d["usage"] = None
        return d

    for i, c in enumerate(plan.choices):
        if c.tool_calls:
            yield ROLE, i, chunk(i, {"role": "assistant", "content": None}, None)
            for j, call in enumerate(c.tool_calls):
                fn = call["function"]
                first = {
                    "index": j,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": fn["name"], "arguments": ""},
                }
                yield CONTENT, i, chunk(i, {"tool_calls": [first]}, None)
                for piece in split_every(fn["arguments"], _ARG_PIECE):
                    yield CONTENT, i, chunk(i, {"tool_calls": [{"index": j, "function": {"arguments": piece}}]}, None)
        else:
            yield ROLE, i, chunk(i, {"role": "assistant", "content": "", "refusal": None}, None)
            for word in c.pieces or split_words(c.content or ""):
                yield CONTENT, i, chunk(i, {"content": word}, None)
        yield FINAL, i, chunk(i, {}, c.finish_reason)
    if plan.include_usage:
        d = dict(base)
        d["choices"] = []
        d["usage"] = plan.usage()
        yield USAGE, -1, d
