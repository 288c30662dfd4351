"""Memory as built-in tools of a Responses request or agent run: `memory_search` and `memory_write`.

A request enables them with a tool of Multihome's own type (docs/memory.md "Memory tools"):

    {"type": "memory", "agent_id": "concierge", "user_id": "user-42",
     "allowed_tools": ["memory_search", "memory_write"], "top_k": 5, "ttl_seconds": null}

The model is offered them as function tools (`MemoryTools.functions`); when it calls one, the
agent loop (api/responses/agent.py) runs it here (`MemoryTools.call`) and hands the model the
output, as it does for an MCP tool, and the client sees the call as an `mcp_call` item of the
reserved server label `memory` (a type the official SDKs parse). The namespace is the request's and
the tenant the caller's, never the model's choice: the tools take no agent or user argument (an
unknown argument is refused), so a model cannot read or write another user's memory, nor another
tenant's. Every bad call (arguments that are not JSON, too long a text, a malformed filter, a store
that fails) is answered to the model as a failed call, so the run goes on and the model can correct
itself. A write carries the call's idempotency key: its record id is derived from it, so a run
resumed after a crash that tries the write again finds the first (`MemoryStore.write(ids=...)`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import replace
from typing import Any

import msgspec

from ...schema.errors import ApiError, echo_quoted
from ...schema.memory import MAX_QUERY, MAX_TOP_K, RecordIn, Scalar, check_id, check_record
from ...schema.responses import MEMORY_LABEL
from ..tenant_quota import TenantStorageFull
from .embedder import Caller, SpaceUnavailable
from .filters import compile_filter
from .store import MemoryStore, NewRecord, keyed_id

log = logging.getLogger(__name__)
TOOL_TYPE = "memory"
LABEL = MEMORY_LABEL  # the server_label of the `mcp_call` items the calls become (no MCP tool may use it)
SEARCH, WRITE = "memory_search", "memory_write"
NAMES = (SEARCH, WRITE)
MAX_ARGUMENTS = 256 * 1024  # bytes of one call's arguments (a record's 32,768 characters, JSON-escaped)
Item = dict[str, Any]


class MemoryToolSpec(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    agent_id: str = ""
    user_id: str = ""
    allowed_tools: list[str] | None = None  # which of NAMES the model is offered (None: both)
    top_k: int = 5  # the most results one search returns
    ttl_seconds: int | None = None  # the TTL of what the model writes (None: the namespace's default)

    @property
    def offered(self) -> tuple[str, ...]:
        allowed = self.allowed_tools
        return NAMES if allowed is None else tuple(n for n in NAMES if n in allowed)


def parse_tool(raw: Any, param: str = "tools") -> MemoryToolSpec:
    """A request's `{"type": "memory", ...}` tool, checked; an ApiError (400) naming the field otherwise."""
    try:
        spec = msgspec.convert(raw, MemoryToolSpec)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"Bad 'memory' tool: {echo_quoted(str(exc))}.", param=param) from None
    if spec.type != TOOL_TYPE:
        raise ApiError(400, f"A memory tool has type '{TOOL_TYPE}'.", param=param)
    check_id(spec.agent_id, f"{param}.agent_id")
    check_id(spec.user_id, f"{param}.user_id")
    if not 1 <= spec.top_k <= MAX_TOP_K:
        raise ApiError(400, f"A memory tool's 'top_k' is between 1 and {MAX_TOP_K}.", param=f"{param}.top_k")
    allowed = spec.allowed_tools
    if allowed is not None and (not allowed or any(n not in NAMES for n in allowed)):
        raise ApiError(
            400, f"A memory tool's 'allowed_tools' lists some of: {', '.join(NAMES)}.", param=f"{param}.allowed_tools"
        )
    check_record(RecordIn("x", None, spec.ttl_seconds), f"{param}.")  # the TTL's bounds
    return spec


def echoed(spec: MemoryToolSpec) -> dict[str, Any]:
    """The tool as a response's `tools` shows it: an `mcp` tool of the reserved label, the one type
    the official SDKs parse that says what it is (a `memory` type would fail their validation)."""
    where = f"agent '{spec.agent_id}', user '{spec.user_id}'"
    return {
        "type": "mcp",
        "server_label": LABEL,
        "server_description": f"Multihome memory ({where}), run by the gateway",
        "allowed_tools": list(spec.offered),
        "headers": None,
        "require_approval": "never",
    }


def function_tools(spec: MemoryToolSpec) -> list[Item]:
    """The function tools (chat shape, as the run's model steps take them) the model is offered."""
    out: list[Item] = []
    if SEARCH in spec.offered:
        out.append(
            {
                "name": SEARCH,
                "description": "Search long-term memory about this user for facts relevant to the conversation "
                "(preferences, past events, names). Returns the best matching memories, most relevant first.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "What to look for, in plain words"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": spec.top_k},
                        "filters": {
                            "type": "object",
                            "description": 'Optional metadata filter, e.g. {"kind": "travel"} or '
                            '{"year": {"gte": 2025}}',
                        },
                    },
                    "required": ["query"],
                    "additionalProperties": False,
                },
            }
        )
    if WRITE in spec.offered:
        out.append(
            {
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
            }
        )
    return [{"type": "function", "function": fn} for fn in out]


class _SearchArgs(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    top_k: int | None = None
    filters: dict[str, Any] | None = None


class _WriteArgs(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    metadata: dict[str, Scalar] | None = None


_search_args = msgspec.json.Decoder(_SearchArgs)
_write_args = msgspec.json.Decoder(_WriteArgs)
_encode = msgspec.json.encode


# TenantStorageFull.what -> what the tenant would hold too many of, and the setting that says how many
_LIMITS = {
    "count": ("records", "max_records"),
    "bytes": ("bytes of memory records", "max_bytes"),
    "namespaces": ("memory namespaces", "max_namespaces"),
}


def memory_full(full: TenantStorageFull) -> str:
    """What a write past the tenant's memory limit is told (the API's 429 and the memory tool's failure)."""
    what, setting = _LIMITS[full.what]
    return (
        f"This tenant would hold {full.would:,} {what}; this gateway keeps at most {full.limit:,} per tenant "
        f"(memory.per_tenant.{setting}). Delete records or namespaces to make room, or ask the gateway's "
        "operator to raise the limit."
    )


class _Refused(Exception):
    """A call the model made wrongly: its message is the model's to read."""


class MemoryTools:
    """One run's memory tools: the request's namespace, bound to the caller's tenant and the store."""

    label = LABEL

    def __init__(
        self,
        store: MemoryStore,
        tenant: str,
        spec: MemoryToolSpec,
        caller: Caller | None = None,
        own: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.spec = spec
        self.caller = caller  # the run's caller: routed embeddings are its calls (api/memory_embeddings.py)
        self._functions = function_tools(spec)
        # A memory tool's name the request left out is still ours (a failed call the model reads), unless
        # the client has a function of that name: a `function_call` would ask the client to run it.
        self._claimed = frozenset(NAMES) - own

    def functions(self) -> list[Item]:
        return self._functions

    def offers(self, function: str) -> bool:
        return function in self.spec.offered

    def claims(self, function: str) -> bool:
        """Whether a model's call of `function` is run here: offered, or refused here if not allowed."""
        return function in self._claimed

    async def call(self, item: Item, key: str) -> Item:
        """Run the `mcp_call` item the model's call became; the item with its output, or failed with the
        error the model reads. `key`: the call's idempotency key (the same on every try)."""
        done: Item = {**item, "output": None, "error": None, "status": "completed"}
        try:
            done["output"] = await self._run(item["name"], item["arguments"] or "", key)
        except _Refused as exc:
            done.update(status="failed", error=_execution_error(str(exc)))
        except ApiError as exc:  # a routed embedding refused (a pin, a budget) or failed: its message says why
            done.update(status="failed", error=_execution_error(exc.body.message))
        except SpaceUnavailable as exc:
            done.update(status="failed", error=_execution_error(f"Memory cannot embed in its model now: {exc}."))
        except TenantStorageFull as exc:
            done.update(status="failed", error=_execution_error(memory_full(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:  # the store or its key: the model hears it failed, the operator's log says why
            log.exception("memory tool %s failed", item["name"])
            done.update(status="failed", error=_execution_error("Memory is unavailable right now; try again later."))
        return done

    async def _run(self, name: str, arguments: str, key: str) -> str:
        spec = self.spec
        if name not in spec.offered:
            raise _Refused(f"No memory tool named {name[:80]!r} is enabled for this run.")
        if len(arguments) > MAX_ARGUMENTS:
            raise _Refused(f"The arguments are longer than {MAX_ARGUMENTS} bytes.")
        try:
            if name == SEARCH:
                return await self._search(_search_args.decode(arguments), key)
            args = _write_args.decode(arguments)
            rec = check_record(RecordIn(args.text, args.metadata, None), "")
        except msgspec.DecodeError as exc:
            raise _Refused(f"The arguments are not valid: {str(exc)[:300]}.") from None
        except ApiError as exc:
            raise _Refused(exc.body.message) from None
        record = NewRecord(rec.text, dict(rec.metadata or {}), spec.ttl_seconds)
        rid = keyed_id(self.tenant, key)
        await self.store.write(self.tenant, spec.agent_id, spec.user_id, [record], ids=[rid], caller=self._caller(key))
        return _encode({"id": rid, "stored": True}).decode()  # also when an earlier try wrote it

    def _caller(self, key: str) -> Caller | None:
        """The caller, its request id made the call's own: the same in every run of the call (a repeated
        embedding after a crash is billed once), distinct between calls."""
        if self.caller is None:
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return replace(self.caller, request_id=f"{self.caller.request_id}-m{digest}")

    async def _search(self, args: _SearchArgs, key: str) -> str:
        spec = self.spec
        if not args.query.strip() or len(args.query) > MAX_QUERY:
            raise _Refused(f"'query' must be 1 to {MAX_QUERY} characters, not blank.")
        try:
            keep = compile_filter(args.filters) if args.filters is not None else None
        except ValueError as exc:
            raise _Refused(f"Bad 'filters': {exc}.") from None
        top_k = min(spec.top_k, max(1, args.top_k or spec.top_k))
        hits = await self.store.search(
            self.tenant, spec.agent_id, spec.user_id, args.query, top_k=top_k, keep=keep, caller=self._caller(key)
        )
        results = [
            {
                "id": h.record.id,
                "text": h.record.text,
                "metadata": h.record.metadata,
                "created_at": int(h.record.created_at.timestamp()),
            }
            for h in hits
        ]
        return _encode({"results": results}).decode()


def _execution_error(text: str) -> Item:
    """An MCP tool's error, in the shape the SDKs parse (`mcp_tool_execution_error`)."""
    return {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": text}]}
