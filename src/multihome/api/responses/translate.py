"""A Responses request -> the canonical chat request; a chat completion -> the Response object.

The canonical body is built as plain data, encoded once and handed to `parse_chat`, so the typed
view, the raw fields pass-through adapters forward and the capability needs are exactly those of an
OpenAI client sending the same conversation as a chat completion (as the Anthropic door does).
The Response object echoes what the request asked for (`Shell`), with the output, usage and status
read back from the completion (reference/responses.md sections 5 and 11).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ...schema.bounded import Decoder
from ...schema.bounds import MAX_TOOLS_OTHER
from ...schema.chat import ChatRequest, ParsedChat, parse_chat
from ...schema.errors import ApiError, bad_request
from ...schema.peek import Usage
from ...schema.responses import CreateResponse, NamedToolChoice
from ...schema.tiers import SERVICE_TIERS
from ...schema.tool_names import MAX_NAME, MAX_RESPONSES_NAME
from ...state.memory.tools import echoed as memory_echo
from ...state.memory.tools import parse_tool
from ..big_bodies import BigBodies
from .items import Item, chat_messages, new_id
from .thinking import Thinking

_encode = msgspec.json.encode
# Fields the gateway accepts and echoes but no chat provider is sent (reported in x-multihome-dropped-params).
_NOT_SENT = ("prompt_cache_key", "prompt_cache_retention", "max_tool_calls")


async def to_canonical(
    req: CreateResponse,
    context: list[Item],
    new: list[Item],
    functions: list[Item] | None = None,
    *,
    thinking: Thinking | None = None,
    pool: BigBodies | None = None,
) -> tuple[ParsedChat, list[str]]:
    """The chat request for this turn: instructions, then the stored context, then the new input.
    `functions`: the MCP servers' tools as function tools (an agent step, api/responses/agent.py).
    `pool`: where a large turn is translated, off the event loop (None: here).
    `thinking`: the response's (the shell's): Claude's thinking blocks the items carry are opened with it
    and sent back (a blob that does not open for this tenant is a 400 naming `input[i]`); without it
    none are."""
    if thinking is not None:
        await open_thinking(req, thinking, context, new)
    if pool is not None:  # a large turn: translated on the pool's thread (api/big_bodies.py)
        return await pool.run(functools.partial(_canonical, req, context, new, functions, thinking))
    return _canonical(req, context, new, functions, thinking)


def _canonical(
    req: CreateResponse, context: list[Item], new: list[Item], functions: list[Item] | None, thinking: Thinking | None
) -> tuple[ParsedChat, list[str]]:
    messages = turn_messages(req, context, new, {}, thinking)
    if not messages:
        raise bad_request("The request has nothing to answer: 'input' is empty.", param="input")
    body, dropped = chat_body(req, messages, functions)
    return parsed_body(req, body), dropped


async def open_thinking(req: CreateResponse, thinking: Thinking, context: list[Item], new: list[Item]) -> None:
    """Open the thinking blobs of the stored context and of the new input (a bad one is a 400 naming
    `input[i]`), and cache the tenant's key when Claude may think (its blocks are sealed as they stream)."""
    await thinking.open(context, None)
    await thinking.open(new, "input")
    if req.reasoning is not None:
        await thinking.ready()


def turn_messages(
    req: CreateResponse,
    context: list[Item],
    new: list[Item],
    asked: dict[str, Item],
    thinking: Thinking | None = None,
) -> list[Item]:
    """The instructions, the stored context and the new input as chat messages. `asked`: MCP approval
    requests by id, filled here (an answer in `new` refers to one in `context`); `thinking`: the blobs
    `open_thinking` opened."""
    messages: list[Item] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    chat_messages(context, messages, asked, thinking)
    chat_messages(new, messages, asked, thinking)
    return messages


def chat_body(
    req: CreateResponse, messages: list[Item], functions: list[Item] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The chat request's body as plain data around `messages`, and the fields no chat provider is sent."""
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    dropped = [name for name in _NOT_SENT if getattr(req, name) is not None]
    if req.tools:
        tools = [_tool(t) for t in req.tools if t.type == "function"]
        if functions:
            tools += functions
        if tools:
            body["tools"] = tools
    if isinstance(req.tool_choice, NamedToolChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
    elif req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    if req.parallel_tool_calls is not None and "tools" in body:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        if fmt.description is not None:
            schema["description"] = fmt.description
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if req.reasoning is not None and req.reasoning.effort is not None:
        # The effort crosses (a thinking budget for Claude, a level or budget for Gemini:
        # docs/translation/reasoning.md); the summary below.
        body["reasoning_effort"] = req.reasoning.effort
    if req.text is not None and req.text.verbosity is not None:
        dropped.append("text.verbosity")
    if req.reasoning is not None:
        dropped += [f"reasoning.{name}" for name in ("context", "mode") if getattr(req.reasoning, name) is not None]
    if req.service_tier is not None:
        # As chat's: planned onto deployments that price the tier, charged at its price, sent on (a
        # native turn sends it as the client did); docs/metering.md "Service tiers".
        body["service_tier"] = req.service_tier
    if req.max_output_tokens is not None:
        body["max_completion_tokens"] = req.max_output_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    user = req.safety_identifier or req.user
    if user:
        body["user"] = user
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # usage arrives in the last chunk only when asked
    if req.multihome:
        body["multihome"] = req.multihome
    return body, dropped


def parsed_body(req: CreateResponse, body: dict[str, Any]) -> ParsedChat:
    """`body` encoded once and parsed as a chat completion request is (a 400 saying why it cannot be served)."""
    try:
        parsed = parse_chat(_encode(body), MAX_RESPONSES_NAME, MAX_TOOLS_OTHER)
    except ApiError as err:
        raise bad_request(f"The request cannot be served: {err.body.message}", param=err.body.param) from None
    parsed.long_name = long_name(req, parsed.request)
    # A summary is asked of the upstreams that return reasoning only when asked (Gemini); what any upstream
    # reasons (Claude's thinking, Gemini's thoughts, reasoning_content) comes back as a reasoning item.
    parsed.reasoning_summary = req.reasoning is not None and req.reasoning.summary not in (None, "none")
    return parsed


def long_name(req: CreateResponse, chat: ChatRequest) -> str | None:
    """Where a function name over chat's MAX_NAME is, in the turn's chat request `chat` (a Responses name
    may be longer: tool_names.py); None when every name fits."""
    for i, tool in enumerate(req.tools or ()):
        if tool.type == "function" and tool.name is not None and len(tool.name) > MAX_NAME:
            return f"tools[{i}].name"
    for fn in chat.tools or ():
        if fn.function is not None and len(fn.function.name) > MAX_NAME:
            return "tools"  # an MCP server's tool (an agent step)
    for msg in chat.messages:
        for call in msg.tool_calls or ():
            if len(call.function.name) > MAX_NAME:
                return "input"  # a function_call item of the input or of the stored context
    return None


def _tool(tool: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    if tool.parameters and tool.parameters != b"null":
        fn["parameters"] = tool.parameters
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


@dataclass(slots=True)
class Shell:
    """What a Response object echoes of its request, and its identity; `render` adds the outcome."""

    req: CreateResponse
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    store: bool = True
    thinking: Thinking | None = None  # seals and opens Claude's thinking blocks (thinking.py); None: not carried
    # The `service_tier` the answer reported, once it did: the tier actually used (a translated answer's is
    # `default`, whatever was asked: providers/openai_out.py), which the Response reports; before it, the
    # tier asked for, as OpenAI's `response.created` does.
    tier: str | None = None

    def render(
        self,
        status: str,
        output: list[Item],
        usage: dict[str, Any] | None = None,
        *,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        req = self.req
        conv = req.conversation_id
        fmt = req.text.format if req.text is not None else None
        done = status in ("completed", "incomplete", "failed")
        out = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if done else None,
            "background": False,
            "error": response_error(error),
            "incomplete_details": incomplete_details(incomplete),
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": req.max_tool_calls,
            "model": req.model,
            "output": output,
            "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "conversation": {"id": conv} if conv else None,
            "reasoning": {"effort": req.reasoning.effort, "summary": req.reasoning.summary}
            if req.reasoning is not None
            else {"effort": None, "summary": None},
            "safety_identifier": req.safety_identifier,
            "prompt_cache_key": req.prompt_cache_key,
            # (an upstream's own word for its tier, outside OpenAI's list, is not passed on: the SDKs' types refuse it)
            "service_tier": self.tier if self.tier in SERVICE_TIERS else req.service_tier or "default",
            "store": self.store,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "text": {
                "format": _format(fmt) if fmt is not None else {"type": "text"},
                "verbosity": (req.text.verbosity if req.text is not None else None) or "medium",
            },
            "tool_choice": _tool_choice(req.tool_choice),
            "tools": [_echo_tool(t) for t in req.tools or ()],
            "top_logprobs": 0,
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "truncation": req.truncation or "disabled",
            "metadata": req.metadata or {},
        }
        # OpenAI's published schema has `usage` as an object and `user` as a string, neither nullable:
        # absent until there is one (the SDKs read an absent field as None).
        if usage is not None:
            out["usage"] = usage
        if req.user is not None:
            out["user"] = req.user
        return out


# OpenAI's `ResponseErrorCode` (the published schema's enum, and the official SDKs' Literal): a failed
# Response's `error.code` is one of these or the SDKs refuse the object when they validate it. The
# gateway's own codes (all_deployments_failed, ...) stay in the message and in the stream's `error` event.
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)
_THROTTLED = frozenset({"all_deployments_throttled", "budget_exceeded"})


# OpenAI's reasons for an incomplete Response (the published schema's enum).
INCOMPLETE_REASONS = frozenset({"max_output_tokens", "content_filter"})


def incomplete_details(reason: str | None) -> dict[str, Any] | None:
    """`incomplete_details` with a reason from OpenAI's enum (the SDKs validate it against theirs). A limit
    of the gateway's own (an agent run's max_steps, max_tool_calls, max_run_time, max_spend) or a reason
    a native upstream made up is a budget that ran out, as `max_output_tokens` is; which one is kept
    in `multihome.limit`, an extension field OpenAI's schema and SDKs let through."""
    if not reason:
        return None
    if reason in INCOMPLETE_REASONS:
        return {"reason": reason}
    return {"reason": "max_output_tokens", "multihome": {"limit": reason}}


def response_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Response's `error` with a code from OpenAI's enum: throttling is rate_limit_exceeded, any other
    code of the gateway's (or an upstream's) own is server_error; the message says what happened."""
    if error is None or error.get("code") in RESPONSE_ERROR_CODES:
        return error
    return {**error, "code": "rate_limit_exceeded" if error.get("code") in _THROTTLED else "server_error"}


def as_published(response: dict[str, Any]) -> dict[str, Any]:
    """A stored Response with `incomplete_details` and `error` in OpenAI's enums. Responses are shaped so
    when made; this mends ones stored before that (an agent limit as the reason, the gateway's own error
    codes), which the SDKs' strict types refuse."""
    details, error = response.get("incomplete_details"), response.get("error")
    reason = details.get("reason") if isinstance(details, dict) else None
    mended_error = response_error(error) if isinstance(error, dict) else error
    if (reason is None or reason in INCOMPLETE_REASONS) and mended_error is error:
        return response
    out = {**response, "error": mended_error}
    if reason is not None and reason not in INCOMPLETE_REASONS:
        out["incomplete_details"] = incomplete_details(reason)
    return out


def _format(fmt: Any) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    out = {"type": "json_schema", "name": fmt.name, "schema": fmt.schema, "strict": fmt.strict}
    if fmt.description is not None:  # a string in OpenAI's schema: absent, never null
        out["description"] = fmt.description
    return out


def _tool_choice(choice: str | NamedToolChoice | None) -> Any:
    if isinstance(choice, NamedToolChoice):
        return {"type": "function", "name": choice.name}
    return choice or "auto"


def _echo_tool(tool: Any) -> dict[str, Any]:
    if tool.type == "mcp":  # headers and authorization are credentials: never echoed
        # server_url and server_description are strings in OpenAI's schema: absent, never null (a
        # registered server may be named by its label alone).
        out: dict[str, Any] = {"type": "mcp", "server_label": tool.server_label}
        if tool.server_url is not None:
            out["server_url"] = tool.server_url
        if tool.server_description is not None:
            out["server_description"] = tool.server_description
        out["allowed_tools"] = tool.allowed_tools
        out["headers"] = None
        out["require_approval"] = tool.require_approval if tool.require_approval is not None else "always"
        return out
    if tool.type == "memory":  # shown as the mcp tool its calls' items name (state/memory/tools.py)
        return memory_echo(parse_tool(tool.memory_spec()))
    params = tool.parameters if tool.parameters and tool.parameters != b"null" else None
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": params,
        "strict": True if tool.strict is None else tool.strict,
    }


# -- a chat completion -> output items, status, usage --------------------------------------------------


class _Fn(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class _Call(msgspec.Struct):
    id: str = ""
    function: _Fn = msgspec.field(default_factory=_Fn)


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_Call] | None = None
    reasoning_content: str | None = None  # not OpenAI chat's: docs/translation/reasoning.md
    thinking_blocks: list[dict[str, Any]] | None = None  # Claude's signed blocks (thinking.py)


class _Choice(msgspec.Struct):
    message: _Message = msgspec.field(default_factory=_Message)
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    usage: Usage | None = None
    service_tier: str | None = None


_completion = Decoder(_Completion)
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(slots=True)
class Outcome:
    status: str
    output: list[Item]
    usage: dict[str, Any]
    incomplete: str | None = None
    error: dict[str, Any] | None = None  # a failed response's error object
    tier: str | None = None  # the service tier the answer reported (Shell.tier)


def from_completion(body: bytes, deployment: str, thinking: Thinking | None = None) -> Outcome:
    """The output items, status and usage of an OpenAI-shaped chat completion (a 502 if unreadable);
    Claude's thinking blocks sealed with `thinking` (none carried without it)."""
    try:
        completion = _completion.decode(body)
    except msgspec.DecodeError:
        raise ApiError(
            502,
            f"Deployment '{deployment}' answered with a body the gateway could not read as a chat completion.",
            type="server_error",
            code="upstream_malformed",
        ) from None
    choice = completion.choices[0] if completion.choices else _Choice()
    incomplete = INCOMPLETE.get(choice.finish_reason or "")
    msg = choice.message
    output: list[Item] = []
    if msg.reasoning_content or msg.thinking_blocks:
        sealed = thinking.carry(msg.thinking_blocks) if thinking is not None and msg.thinking_blocks else None
        output.append(reasoning_item(new_id("rs"), msg.reasoning_content or "", sealed))
    if msg.content or msg.refusal:
        parts = []
        if msg.content:
            parts.append(output_text(msg.content))
        if msg.refusal:
            parts.append({"type": "refusal", "refusal": msg.refusal})
        output.append(message_item(new_id("msg"), parts, "incomplete" if incomplete else "completed"))
    for call in msg.tool_calls or ():
        output.append(function_call_item(new_id("fc"), call.id, call.function.name, call.function.arguments))
    status = "incomplete" if incomplete else "completed"
    return Outcome(status, output, usage_of(completion.usage), incomplete, tier=completion.service_tier)


def reasoning_item(item_id: str, summary: str | None, sealed: str | None = None) -> Item:
    """What the upstream reasoned, as a Responses reasoning item: its text is the summary (Claude's
    thinking and Gemini's thought summaries are summaries already), Claude's signed blocks, sealed,
    its `encrypted_content` (thinking.py). `None`: the item as it opens."""
    parts = [] if not summary else [{"type": "summary_text", "text": summary}]
    item: Item = {"type": "reasoning", "id": item_id, "summary": parts}
    if sealed is not None:
        item["encrypted_content"] = sealed
    return item


def output_text(text: str) -> Item:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, parts: list[Item], status: str) -> Item:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": parts}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> Item:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id or new_id("call"),
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def usage_of(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    cached = (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details is not None else 0
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens or u.prompt_tokens + u.completion_tokens,
    }
