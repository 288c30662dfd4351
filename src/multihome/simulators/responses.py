"""The Responses API (`POST /v1/responses`) as OpenAI and Azure serve it, stateless.

The gateway keeps conversation state in its own store and sends upstreams the whole context
with `store: false`; this simulator holds nothing, so it refuses what would need state
(`store` left true, `previous_response_id`, `conversation`, `item_reference`) with the 400 a
stateless call gets. The reply is planned by the chat module (same words, same tool calls, same
token counts) and rendered as a `Response` object or as the Responses event stream, with
`sequence_number`s from 0 and no `[DONE]` (reference: shared/reference/responses.md §5, §7, §11).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .chat import BadRequest, ChatPlan, ChoicePlan
from .content import short_hash, split_every, split_words

_MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a smaller max_output_tokens
_ARG_PIECE = 16  # characters of function arguments per delta event
_INPUT_ROLES = {"user", "assistant", "system", "developer"}


def _bad_type(param: str, expected: str) -> BadRequest:
    return BadRequest(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


# -- request: Responses -> the chat body the planner reads --------------------------------------


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a create request and restate it as a Chat Completions body (reference §11)."""
    if body.get("store", True) is not False:
        raise BadRequest(
            "This simulated upstream keeps no state: send 'store': false (the gateway keeps the state).",
            "store",
            "invalid_value",
        )
    for name, code in (("previous_response_id", "previous_response_not_found"), ("conversation", "invalid_value")):
        if body.get(name) is not None:
            raise BadRequest(f"'{name}' needs stored state, which this simulated upstream does not keep.", name, code)
    if body.get("background"):
        raise BadRequest("Background mode needs 'store': true.", "background", "invalid_value")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad_type("instructions", "a string")
        messages.append({"role": "system", "content": instructions})
    messages += _messages(body.get("input"))
    out: dict[str, Any] = {"messages": messages, "stream": body.get("stream")}
    if body.get("stream_options") is not None:
        if not body.get("stream"):
            raise BadRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise _bad_type("max_output_tokens", "an integer")
        if limit < _MIN_OUTPUT_TOKENS:
            raise BadRequest(
                "Invalid 'max_output_tokens': integer below minimum value. "
                f"Expected a value >= {_MIN_OUTPUT_TOKENS}, but got {limit} instead.",
                "max_output_tokens",
                "integer_below_min_value",
            )
        out["max_completion_tokens"] = limit
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("parallel_tool_calls") is not None:
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    fmt = _text_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]  # the planner counts the reasoning tokens
    return out


def _messages(input_: Any) -> list[dict[str, Any]]:
    if isinstance(input_, str):
        return [{"role": "user", "content": input_}]
    if input_ is None:
        raise BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if not isinstance(input_, list):
        raise _bad_type("input", "a string or an array of input items")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(input_):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad_type(param, "an object")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            call = _function_call(item, param)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # consecutive calls are one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _bad_type(f"{param}.call_id", "a string")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _output_text(item, param)})
        elif kind == "reasoning":
            continue  # Chat has no reasoning input: the planner never sees it
        elif kind == "item_reference":
            raise BadRequest(
                f"Item with id '{item.get('id')}' not found: this simulated upstream keeps no items.",
                f"{param}.id",
                "invalid_value",
            )
        else:
            raise BadRequest(f"Invalid value for '{param}.type': {kind!r}.", f"{param}.type", "invalid_value")
    if not messages:
        raise BadRequest("Invalid 'input': empty array.", "input", "empty_array")
    return messages


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _INPUT_ROLES:
        raise BadRequest(f"Invalid value for '{param}.role': {role!r}.", f"{param}.role", "invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad_type(f"{param}.content", "a string or an array of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise _bad_type(f"{p}.text", "a string")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            continue
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise _bad_type(f"{p}.image_url", "a string")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}})
        elif kind == "input_file":
            parts.append({"type": "file", "file": {k: v for k, v in part.items() if k != "type"}})
        else:
            raise BadRequest(f"Invalid value for '{p}.type': {kind!r}.", f"{p}.type", "invalid_value")
    return {"role": role, "content": parts}


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise _bad_type(f"{param}.{name}", "a string")
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _output_text(item: dict[str, Any], param: str) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(p.get("text", "") for p in output if isinstance(p, dict) and p.get("type") == "input_text")
    raise _bad_type(f"{param}.output", "a string or an array of content parts")


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad_type("tools", "an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad_type(f"tools[{i}]", "an object")
        if tool.get("type") != "function":
            raise BadRequest(
                f"Tool type {tool.get('type')!r} is not served by this simulated upstream (function tools only).",
                f"tools[{i}].type",
                "invalid_value",
            )
        if not isinstance(tool.get("name"), str):
            raise _bad_type(f"tools[{i}].name", "a string")
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            return {"type": "function", "function": {"name": choice.get("name")}}
        if choice.get("type") == "allowed_tools":
            return {
                "type": "allowed_tools",
                "allowed_tools": {"mode": choice.get("mode"), "tools": choice.get("tools")},
            }
    return choice  # "none" | "auto" | "required", or whatever the chat validator refuses


def _text_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad_type("text.format", "an object")
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise BadRequest(
                "Missing required parameter: 'text.format.name' or 'text.format.schema'.",
                "text.format",
                "missing_required_parameter",
            )
        return {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
    return fmt


# -- reply: the plan as a Response --------------------------------------------------------------


class ResponseShape:
    """What every rendering of one response shares: its ids and the request fields it echoes."""

    def __init__(self, plan: ChatPlan, body: dict[str, Any], created: int) -> None:
        self.plan = plan
        self.choice: ChoicePlan = plan.choices[0]
        self.id = "resp_" + plan.id.removeprefix("chatcmpl-")
        self.created = created
        self.body = body

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{short_hash(self.id, prefix, str(index))}"

    def status(self) -> tuple[str, dict[str, str] | None]:
        reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(self.choice.finish_reason)
        return ("incomplete", {"reason": reason}) if reason else ("completed", None)

    def items(self) -> list[dict[str, Any]]:
        """The output items when done."""
        c = self.choice
        if c.tool_calls:
            return [self.function_call(j, call, "completed") for j, call in enumerate(c.tool_calls)]
        status, _ = self.status()
        return [self.message(status, c.content or "")]

    def message(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [_text_part(text)]
        return {
            "id": self.item_id("msg", 0),
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def function_call(self, j: int, call: dict[str, Any], status: str, arguments: str | None = None) -> dict[str, Any]:
        fn = call["function"]
        return {
            "id": self.item_id("fc", j),
            "type": "function_call",
            "call_id": call["id"],
            "name": fn["name"],
            "arguments": fn["arguments"] if arguments is None else arguments,
            "status": status,
        }

    def response(self, status: str, output: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        body = self.body
        _, incomplete = self.status()
        tools = [{**t, "strict": t.get("strict", True)} for t in body.get("tools") or []]
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "completed_at": self.created if done else None,
            "background": False,
            "error": None,
            "incomplete_details": incomplete if done else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.plan.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "conversation": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools,
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self.usage() if done else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def usage(self) -> dict[str, Any]:
        inp, out = self.plan.prompt_tokens, self.plan.completion_tokens
        return {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": self.plan.reasoning_tokens},
            "total_tokens": inp + out,
        }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def render_response(plan: ChatPlan, body: dict[str, Any], created: int) -> dict[str, Any]:
    shape = ResponseShape(plan, body, created)
    status, _ = shape.status()
    return shape.response(status, shape.items(), done=True)


def response_events(plan: ChatPlan, body: dict[str, Any], created: int) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(is_content, event) in the order OpenAI streams them; content events are the deltas."""
    shape = ResponseShape(plan, body, created)
    seq = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        out = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        return out

    yield False, event("response.created", response=shape.response("in_progress", [], done=False))
    yield False, event("response.in_progress", response=shape.response("in_progress", [], done=False))
    c = shape.choice
    if c.tool_calls:
        for j, call in enumerate(c.tool_calls):
            item_id = shape.item_id("fc", j)
            yield (
                False,
                event(
                    "response.output_item.added", output_index=j, item=shape.function_call(j, call, "in_progress", "")
                ),
            )
            args = call["function"]["arguments"]
            for piece in split_every(args, _ARG_PIECE):
                yield (
                    True,
                    event("response.function_call_arguments.delta", item_id=item_id, output_index=j, delta=piece),
                )
            yield (
                False,
                event(
                    "response.function_call_arguments.done",
                    item_id=item_id,
                    output_index=j,
                    name=call["function"]["name"],
                    arguments=args,
                ),
            )
            yield (
                False,
                event("response.output_item.done", output_index=j, item=shape.function_call(j, call, "completed")),
            )
    else:
        text = c.content or ""
        item_id = shape.item_id("msg", 0)
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield False, event("response.output_item.added", output_index=0, item=shape.message("in_progress", None))
        yield False, event("response.content_part.added", **where, part=_text_part(""))
        for word in c.pieces or split_words(text):
            yield True, event("response.output_text.delta", **where, delta=word, logprobs=[])
        yield False, event("response.output_text.done", **where, text=text, logprobs=[])
        yield False, event("response.content_part.done", **where, part=_text_part(text))
        status, _ = shape.status()
        yield False, event("response.output_item.done", output_index=0, item=shape.message(status, text))
    status, _ = shape.status()
    yield False, event(f"response.{status}", response=shape.response(status, shape.items(), done=True))
