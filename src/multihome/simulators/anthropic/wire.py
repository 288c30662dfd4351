"""Anthropic Messages wire format for the simulator: request validation (Anthropic's rules and
messages), conversion to the kind-neutral planner's input, and rendering of the reply as a
Message or as named SSE events. The deterministic reply rules stay in chat.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from ..chat import BadRequest, ChatPlan
from ..content import estimate_tokens, short_hash, split_every, split_words, text_of, truncate_to_tokens

_encode = msgspec.json.encode
# Top-level request fields the Messages API accepts; anything else is "Extra inputs are not permitted".
FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
        "output_config",
        "container",
        "mcp_servers",
        "context_management",
        "inference_geo",
    }
)
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_ARG_PIECE = 16


def _bad(message: str) -> BadRequest:
    return BadRequest(message)


def _blocks(content: Any) -> list:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _check_block(block: Any, where: str, role: str) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _bad(f"{where}: Input should be an object with a 'type'")
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _bad(f"{where}.text: Field required")
        if not block["text"]:
            raise _bad(f"{where}: text content blocks must be non-empty")
    elif kind == "image":
        src = block.get("source")
        if not isinstance(src, dict) or src.get("type") not in ("base64", "url"):
            raise _bad(f"{where}.source: Input tag does not match any of the expected tags: 'base64', 'url'")
        if src["type"] == "base64" and src.get("media_type") not in MEDIA_TYPES:
            raise _bad(
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )
        if role != "user":
            raise _bad(f"{where}: image blocks are only allowed in user messages")
    elif kind == "tool_use":
        if role != "assistant":
            raise _bad(f"{where}: tool_use blocks are only allowed in assistant messages")
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise _bad(f"{where}: tool_use blocks need 'id' and 'name'")
        if not isinstance(block.get("input"), dict):
            raise _bad(f"{where}.input: Input should be a valid dictionary")
    elif kind == "tool_result":
        if role != "user":
            raise _bad(f"{where}: tool_result blocks are only allowed in user messages")
        if not isinstance(block.get("tool_use_id"), str):
            raise _bad(f"{where}.tool_use_id: Field required")
    elif kind == "thinking":
        if role != "assistant":
            raise _bad(f"{where}: thinking blocks are only allowed in assistant messages")
        text, signature = block.get("thinking"), block.get("signature")
        if not isinstance(text, str) or not isinstance(signature, str) or signature != thinking_signature(text):
            # The API checks that a thinking block comes back exactly as the model produced it.
            raise _bad(f"{where}: Invalid `signature` in `thinking` block")
    elif kind == "redacted_thinking":
        if role != "assistant" or not isinstance(block.get("data"), str) or not block["data"]:
            raise _bad(f"{where}.data: Field required")
    elif kind not in ("document", "search_result"):
        raise _bad(f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags")


def validate(body: dict) -> list[dict]:
    """Anthropic's request checks. Returns the turns with consecutive same-role turns combined
    (as the API documents it does)."""
    extra = sorted(set(body) - FIELDS)
    if extra:
        raise _bad(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str):
        raise _bad("model: Field required")
    mt = body.get("max_tokens")
    if mt is None:
        raise _bad("max_tokens: Field required")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        raise _bad("max_tokens: Input should be greater than or equal to 1")
    t = body.get("temperature")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1):
        raise _bad("temperature: range: 0..1")
    p = body.get("top_p")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
        raise _bad("top_p: range: 0..1")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s.strip() for s in stops)):
        raise _bad("stop_sequences: each stop sequence must be a non-empty string with non-whitespace characters")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or not all(isinstance(b, dict) and b.get("type") == "text" for b in system):
            raise _bad("system: Input should be a valid string or a list of text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _bad("messages: Field required")
    if not messages:
        raise _bad("messages: at least one message is required")
    turns: list[dict] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"messages.{i}: Input should be a valid dictionary")
        role = m.get("role")
        if role == "system":
            raise _bad(
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                'not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        if not isinstance(content, (str, list)):
            raise _bad(f"messages.{i}.content: Field required")
        blocks = _blocks(content)
        last = i == len(messages) - 1
        if not blocks or (isinstance(content, str) and not content and not (last and role == "assistant")):
            raise _bad(
                f"messages.{i}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        for j, block in enumerate(blocks):
            if not (isinstance(content, str) and last and role == "assistant"):
                _check_block(block, f"messages.{i}.content.{j}", role)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = turns[-1]["content"] + blocks
        else:
            turns.append({"role": role, "content": list(blocks)})
    _check_tool_pairs(turns)
    _check_tools(body)
    check_thinking(body)
    _check_thinking_turn(body, turns)
    return turns


_SIGNING_KEY = b"multihome-simulated-claude"


def thinking_signature(text: str) -> str:
    """The signature the simulator gives a thinking block: an HMAC of its text, so any change to
    the text or the signature on the way back is caught, as Anthropic catches it."""
    return base64.b64encode(hmac.new(_SIGNING_KEY, text.encode(), hashlib.sha256).digest()).decode()


def thinking_budget(body: dict) -> int | None:
    thinking = body.get("thinking")
    return thinking["budget_tokens"] if isinstance(thinking, dict) and thinking.get("type") == "enabled" else None


def check_thinking(body: dict) -> None:
    """Extended thinking's rules, in Anthropic's words."""
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise _bad("thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled'")
    if thinking["type"] == "disabled":
        return
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise _bad("thinking.enabled.budget_tokens: Field required")
    if budget < 1024:
        raise _bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= body["max_tokens"]:
        raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`.")
    t = body.get("temperature")
    if t is not None and t != 1:
        raise _bad("`temperature` may only be set to 1 when thinking is enabled.")
    p = body.get("top_p")
    if p is not None and p < 0.95:
        raise _bad("`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled.")
    choice = body.get("tool_choice") or {"type": "auto"}
    if choice.get("type") in ("any", "tool"):
        raise _bad("Thinking may not be enabled when tool_choice forces tool use.")


def _check_thinking_turn(body: dict, turns: list[dict]) -> None:
    """With thinking on, the assistant turn that called the tools the request answers must open with
    its thinking block (Anthropic's extended-thinking rule for tool use, in its words)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled" or len(turns) < 2:
        return
    last_user, caller = turns[-1], turns[-2]
    answers = any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last_user["content"])
    if not answers or caller["role"] != "assistant" or not caller["content"]:
        return
    first = caller["content"][0].get("type")
    if first not in ("thinking", "redacted_thinking"):
        raise _bad(
            f"messages.{len(turns) - 2}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
            f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block "
            "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
            "thinking blocks from previous turns. To avoid this requirement, disable `thinking`."
        )


def _check_tool_pairs(turns: list[dict]) -> None:
    """Every tool_use must be answered by a tool_result in the very next (user) turn, and every
    tool_result must answer a tool_use of the previous turn."""
    for i, turn in enumerate(turns):
        uses = [b["id"] for b in turn["content"] if b.get("type") == "tool_use"] if turn["role"] == "assistant" else []
        if uses:
            nxt = turns[i + 1]["content"] if i + 1 < len(turns) else None
            if nxt is None:
                continue  # the model's own last turn (prefill) may end with tool_use
            answered = {b.get("tool_use_id") for b in nxt if b.get("type") == "tool_result"}
            missing = [u for u in uses if u not in answered]
            if missing:
                raise _bad(
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                    "`tool_result` block in the next message."
                )
        if turn["role"] == "user":
            prev = turns[i - 1]["content"] if i > 0 and turns[i - 1]["role"] == "assistant" else []
            known = {b.get("id") for b in prev if b.get("type") == "tool_use"}
            for b in turn["content"]:
                if b.get("type") == "tool_result" and b.get("tool_use_id") not in known:
                    raise _bad(
                        f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{b.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message."
                    )


def _check_tools(body: dict) -> None:
    tools = body.get("tools")
    names = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools: Input should be a valid list")
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise _bad(f"tools.{i}.name: Field required")
            schema = t.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise _bad(f"tools.{i}.input_schema.type: Input should be 'object'")
            names.add(t["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            raise _bad("tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise _bad(f"tool_choice: Tool '{choice.get('name')}' not found in tools")
    oc = body.get("output_config")
    if oc is not None:
        fmt = oc.get("format") if isinstance(oc, dict) else None
        if fmt is not None and (
            not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict)
        ):
            raise _bad("output_config.format: expected {type: 'json_schema', schema: {...}}")


# -- to the kind-neutral planner -------------------------------------------------------------


def planner_body(body: dict, turns: list[dict]) -> dict:
    """The same request in the OpenAI shape chat.plan_chat reads (stop/max_tokens are applied
    afterwards, Anthropic-style, so stop_sequence can be reported)."""
    messages: list[dict] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": system if isinstance(system, str) else text_of(system)})
    for turn in turns:
        if turn["role"] == "assistant":
            texts = [b["text"] for b in turn["content"] if b.get("type") == "text"]
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": _encode(b["input"]).decode()},
                }
                for b in turn["content"]
                if b.get("type") == "tool_use"
            ]
            msg: dict = {"role": "assistant", "content": " ".join(texts) or None}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            continue
        parts: list[dict] = []
        for b in turn["content"]:
            kind = b.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": b["text"]})
            elif kind == "image":
                parts.append({"type": "image_url", "image_url": {"url": "sim://image"}})
            elif kind == "tool_result":
                if parts:
                    messages.append({"role": "user", "content": parts})
                    parts = []
                content = b.get("content")
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": b["tool_use_id"],
                        "content": content if isinstance(content, str) else text_of(content or []),
                    }
                )
        if parts:
            messages.append({"role": "user", "content": parts})
    out: dict = {"model": body["model"], "messages": messages}
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {"name": t["name"], "description": t.get("description"), "parameters": t["input_schema"]},
            }
            for t in tools
        ]
        choice = body.get("tool_choice") or {"type": "auto"}
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(choice["type"]) or {
            "type": "function",
            "function": {"name": choice.get("name")},
        }
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    fmt = (body.get("output_config") or {}).get("format")
    if fmt:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}
    return out


# -- prompt caching --------------------------------------------------------------------------


def cache_prefix(body: dict, turns: list[dict]) -> tuple[bytes, int] | None:
    """(key, tokens) of the prefix up to the last `cache_control` marker, in Anthropic's cache
    order (tools, system, messages); None without markers."""
    items: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    items.extend([{"type": "text", "text": system}] if isinstance(system, str) else (system or []))
    for turn in turns:
        items.extend(turn["content"])
    last = max((k for k, it in enumerate(items) if isinstance(it, dict) and it.get("cache_control")), default=-1)
    if last < 0:
        return None
    prefix = items[: last + 1]
    tokens = sum(
        estimate_tokens(it["text"])
        if it.get("type") == "text" and isinstance(it.get("text"), str)
        else estimate_tokens(_encode(it).decode())
        for it in prefix
    )
    return _encode([body["model"], prefix]), tokens


# -- the reply -------------------------------------------------------------------------------


@dataclass(slots=True)
class MessagePlan:
    id: str
    model: str
    blocks: list[dict]  # finished content blocks
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    cache_read: int = 0
    cache_creation: int = 0
    pieces: list[str] | None = None  # text deltas forced by the `chunks` knob
    thinking_tokens: int = 0  # the thinking part of output_tokens

    def usage(self) -> dict:
        out = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output_tokens,
            "service_tier": "standard",
        }
        if self.thinking_tokens:
            out["output_tokens_details"] = self.output_details()
        return out

    def output_details(self) -> dict:
        """`usage.output_tokens_details`: the thinking part of output_tokens (the SDK's OutputTokensDetails)."""
        return {"thinking_tokens": self.thinking_tokens}


def message_plan(body: dict, plan: ChatPlan, key: bytes, refuse_prompt: bool) -> MessagePlan:
    """Turn the planner's OpenAI-style choice into Anthropic content blocks and stop reason;
    with extended thinking on, a signed thinking block comes first."""
    mp = _answer_plan(body, plan, key, refuse_prompt)
    budget = thinking_budget(body)
    if budget is not None and mp.stop_reason != "refusal":
        asked = next((m["content"] for m in reversed(plan_messages(body)) if m["role"] == "user"), "")
        text = truncate_to_tokens(f"The user said: {asked}. Answer plainly.", budget)
        mp.blocks.insert(0, {"type": "thinking", "thinking": text, "signature": thinking_signature(text)})
        mp.output_tokens += estimate_tokens(text)
        mp.thinking_tokens = estimate_tokens(text)
        mp.pieces = None  # the chunks knob paces a single text block
    return mp


def plan_messages(body: dict) -> list[dict]:
    """(role, text) of each turn, text only, for the simulated reasoning to quote."""
    out = []
    for m in body.get("messages") or ():
        content = m.get("content")
        text = content if isinstance(content, str) else text_of([b for b in content if b.get("type") == "text"])
        out.append({"role": m.get("role"), "content": text})
    return out


def _answer_plan(body: dict, plan: ChatPlan, key: bytes, refuse_prompt: bool) -> MessagePlan:
    choice = plan.choices[0]
    mid = "msg_" + short_hash(key, size=12)
    blocks: list[dict] = []
    stop_reason, stop_seq = "end_turn", None
    pieces = choice.pieces
    if refuse_prompt:
        return MessagePlan(mid, plan.model, [], "refusal", None, plan.prompt_tokens, 0)
    if choice.tool_calls:
        choice_type = (body.get("tool_choice") or {"type": "auto"})["type"]
        if choice_type == "auto":
            # Claude usually says something before calling tools under `auto`; it also makes the
            # tool blocks start at index 1, which is what a client-side decoder must cope with.
            names = ", ".join(c["function"]["name"] for c in choice.tool_calls)
            blocks.append({"type": "text", "text": f"I'll use {names}."})
        for call in choice.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + call["id"][5:],
                    "name": call["function"]["name"],
                    "input": msgspec.json.decode(call["function"]["arguments"]),
                }
            )
        stop_reason = "tool_use"
        out_tokens = choice.completion_tokens + (estimate_tokens(blocks[0]["text"]) if choice_type == "auto" else 0)
        return MessagePlan(mid, plan.model, blocks, stop_reason, None, plan.prompt_tokens, out_tokens)
    text = choice.content or ""
    if choice.finish_reason == "content_filter":
        stop_reason = "refusal"
    else:
        stops = [s for s in body.get("stop_sequences") or () if s in text]
        if stops:
            first = min(stops, key=text.find)
            text, stop_reason, stop_seq, pieces = text[: text.find(first)], "stop_sequence", first, None
        if estimate_tokens(text) > body["max_tokens"]:
            text, stop_reason, stop_seq, pieces = truncate_to_tokens(text, body["max_tokens"]), "max_tokens", None, None
    if text:
        blocks.append({"type": "text", "text": text})
    return MessagePlan(
        mid,
        plan.model,
        blocks,
        stop_reason,
        stop_seq,
        plan.prompt_tokens,
        estimate_tokens(text) if text else 0,
        pieces=pieces,
    )


def render_message(mp: MessagePlan) -> dict:
    return {
        "id": mp.id,
        "type": "message",
        "role": "assistant",
        "model": mp.model,
        "content": mp.blocks,
        "stop_reason": mp.stop_reason,
        "stop_sequence": mp.stop_sequence,
        "usage": mp.usage(),
    }


CONTENT = "content"  # a content_block_delta: what `cut_after` counts


def stream_events(mp: MessagePlan) -> Iterator[tuple[str, str, dict]]:
    """(stage, event name, data) in Anthropic's order: message_start, per block start/deltas/stop
    (with a ping after the first start, as the API does), message_delta, message_stop."""
    start_usage = {k: v for k, v in mp.usage().items() if k != "output_tokens_details"} | {"output_tokens": 1}
    yield (
        "head",
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": mp.id,
                "type": "message",
                "role": "assistant",
                "model": mp.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    for index, block in enumerate(mp.blocks):
        if block["type"] == "thinking":
            yield (
                "head",
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            for word in split_words(block["thinking"]):
                yield (
                    CONTENT,
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": word},
                    },
                )
            yield (
                "tail",
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                },
            )
        elif block["type"] == "text":
            yield (
                "head",
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            if index == 0:
                yield "head", "ping", {"type": "ping"}
            for word in mp.pieces if mp.pieces and len(mp.blocks) == 1 else split_words(block["text"]):
                yield (
                    CONTENT,
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}},
                )
        else:
            yield (
                "head",
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                },
            )
            if index == 0:
                yield "head", "ping", {"type": "ping"}
            # The API opens every tool input with an empty fragment, then streams the JSON text.
            for piece in [""] + split_every(_encode(block["input"]).decode(), _ARG_PIECE):
                yield (
                    CONTENT,
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield "tail", "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "tail",
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": mp.stop_reason, "stop_sequence": mp.stop_sequence},
            "usage": {
                "output_tokens": mp.output_tokens,
                **({"output_tokens_details": mp.output_details()} if mp.thinking_tokens else {}),
            },
        },
    )
    yield "tail", "message_stop", {"type": "message_stop"}


def sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"
