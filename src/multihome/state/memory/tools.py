"""Memory as built-in tools of a Responses request or agent run: `memory_search` and `memory_write`.

A request enables them with a Multihome tool of its own type (docs/memory.md "Memory tools"):

    {"type": "memory", "agent_id": "concierge", "user_id": "user-42", "write": true, "top_k": 5}

The gateway then offers the model two function tools (`function_tools`), and when the model calls
one it runs it here (`call`) and hands the model the output, as it does for MCP tools, without the
client seeing a function call to answer. The namespace is the request's, never the model's choice:
the tools take no agent or user argument, so a model cannot read or write another user's memory,
and the tenant is the caller's. A bad call (missing query, text too long) is answered to the model
as an error object, so the run goes on and the model can correct itself.

This module is the seam for the Responses run loop (api/responses/), which hooks it in: parse the
request's `memory` tool with `parse_tool`, add `function_tools(spec)` to what the model is offered,
and answer each call whose name is in `NAMES` with `await call(store, tenant, spec, name, arguments)`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...schema.errors import ApiError
from ...schema.memory import MAX_TOP_K, RecordIn, check_id, check_record
from .store import MemoryStore, NewRecord

TOOL_TYPE = "memory"
SEARCH, WRITE = "memory_search", "memory_write"
NAMES = frozenset({SEARCH, WRITE})


class MemoryToolSpec(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    agent_id: str = ""
    user_id: str = ""
    write: bool = True  # offer memory_write too (false: the model may only search)
    top_k: int = 5  # the most results one search returns
    ttl_seconds: int | None = None  # the TTL of what the model writes (None: the namespace's default)


def parse_tool(raw: Any) -> MemoryToolSpec:
    """A request's `{"type": "memory", ...}` tool, checked; an ApiError (400) naming the field otherwise."""
    try:
        spec = msgspec.convert(raw, MemoryToolSpec)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"Bad 'memory' tool: {exc}.", param="tools") from None
    if spec.type != TOOL_TYPE:
        raise ApiError(400, f"A memory tool has type '{TOOL_TYPE}'.", param="tools")
    check_id(spec.agent_id, "tools.agent_id")
    check_id(spec.user_id, "tools.user_id")
    if not 1 <= spec.top_k <= MAX_TOP_K:
        raise ApiError(400, f"A memory tool's 'top_k' is between 1 and {MAX_TOP_K}.", param="tools.top_k")
    return spec


def function_tools(spec: MemoryToolSpec) -> list[dict[str, Any]]:
    """The function tools (Responses API shape) the model is offered for `spec`."""
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "name": SEARCH,
            "description": "Search long-term memory about this user for facts relevant to the conversation "
            "(preferences, past events, names). Returns the best matching memories, most relevant first.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for, in plain words"},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": spec.top_k},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
            "strict": False,
        }
    ]
    if spec.write:
        tools.append(
            {
                "type": "function",
                "name": WRITE,
                "description": "Remember one durable fact about this user for later conversations. One short, "
                "self-contained sentence per call.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "description": "The fact, as a sentence"},
                        "metadata": {
                            "type": "object",
                            "description": "Optional labels (string, number or boolean values)",
                            "additionalProperties": {"type": ["string", "number", "boolean"]},
                        },
                    },
                    "required": ["text"],
                    "additionalProperties": False,
                },
                "strict": False,
            }
        )
    return tools


class _SearchArgs(msgspec.Struct):
    query: str
    top_k: int | None = None


_search_args = msgspec.json.Decoder(_SearchArgs)
_write_args = msgspec.json.Decoder(RecordIn)
_encode = msgspec.json.encode


async def call(store: MemoryStore, tenant: str, spec: MemoryToolSpec, name: str, arguments: str) -> str:
    """Run the model's call of `name` with its JSON `arguments`; the output for the model (JSON text).
    A KMS failure propagates (the run cannot go on without its key); bad arguments are answered."""
    try:
        if name == SEARCH:
            args = _search_args.decode(arguments)
            if not args.query.strip():
                return _error("'query' is empty")
            top_k = min(spec.top_k, max(1, args.top_k or spec.top_k))
            hits = await store.search(tenant, spec.agent_id, spec.user_id, args.query, top_k=top_k)
            results = [
                {"id": h.record.id, "text": h.record.text, "metadata": h.record.metadata, "created_at": _ts(h)}
                for h in hits
            ]
            return _encode({"results": results}).decode()
        if name == WRITE and spec.write:
            rec = check_record(_write_args.decode(arguments), "")
            ttl = rec.ttl_seconds if rec.ttl_seconds is not None else spec.ttl_seconds
            [stored] = await store.write(
                tenant, spec.agent_id, spec.user_id, [NewRecord(rec.text, dict(rec.metadata or {}), ttl)]
            )
            return _encode({"id": stored.id, "stored": True}).decode()
        return _error(f"no memory tool named {name!r} is enabled")
    except msgspec.DecodeError as exc:
        return _error(f"the arguments are not valid: {exc}")
    except ApiError as exc:
        return _error(exc.body.message)


def _ts(hit: Any) -> int:
    return int(hit.record.created_at.timestamp())


def _error(message: str) -> str:
    return _encode({"error": message}).decode()
