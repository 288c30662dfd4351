"""`/v1/memory`: long-term memory records per namespace (agent, user) of the caller's tenant — write,
read, list, delete, search (hybrid, with metadata filters), namespace TTLs, and forgetting a user.

The caller's key names the tenant; an org-admin acting across tenants names one with `?tenant=`.
Another tenant's record is not found (404), whatever its id. Deleting a whole namespace or forgetting
a user is for a tenant-admin (or org-admin): one call removes what many applications wrote.
docs/memory.md describes the API, the storage and the search.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from ..audit.events import MemoryDeletion
from ..audit.writer import AuditUnwritable
from ..schema.errors import ApiError, bad_request, echo, storage_quota_exceeded
from ..schema.memory import (
    check_id,
    parse_create_records,
    parse_search,
    parse_update_namespace,
)
from ..schema.principal import ALL_TENANTS, ORG_ADMIN, TENANT_ADMIN
from ..state.memory import EmbedderUnavailable, Hit, MemoryRecord, MemoryStore, Namespace, NewRecord, compile_filter
from ..state.memory.embedder import SpaceUnavailable
from ..state.memory.filters import Predicate
from ..state.memory.tools import memory_full
from ..state.tenant_quota import TenantStorageFull
from ..storage.errors import Invalid
from .admin.pages import QUERY as PAGE_QUERY
from .admin.pages import limit_after, paged
from .admin.route import unreadable_row
from .asgi import Receive, Send, read_body
from .audit_errors import MADE_UNAUDITED, audit_api_error
from .kms_errors import for_request
from .memory_embeddings import caller_of, space_refusal
from .pipeline import Call, Pipeline
from .responses.common import answer, list_query, page, query, segments, stored
from .tenant_gate import TenantGate

log = logging.getLogger("multihome.memory")

T = TypeVar("T")


def _ts(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def record_view(rec: MemoryRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "object": "memory.record",
        "agent_id": rec.agent_id,
        "user_id": rec.user_id,
        "text": rec.text,
        "metadata": rec.metadata,
        "created_at": _ts(rec.created_at),
        "expires_at": _ts(rec.expires_at),
    }


def hit_view(hit: Hit) -> dict[str, Any]:
    return {**record_view(hit.record), "score": round(hit.score, 6), "similarity": round(hit.similarity, 6)}


def _namespace_view(ns: Namespace) -> dict[str, Any]:
    return {
        "object": "memory.namespace",
        "agent_id": ns.agent_id,
        "user_id": ns.user_id,
        "records": ns.records,
        "default_ttl_seconds": ns.default_ttl_s,
        "embedding_model": ns.embedding_model,  # what embeds its records and queries (None: nothing yet)
        "embedding_dimensions": ns.embedding_dim,
        "created_at": _ts(ns.created_at),
        "updated_at": _ts(ns.updated_at),
    }


def _with_unreadable(body: dict[str, Any], found: Any) -> dict[str, Any]:
    """A list's answer, naming the records it could not read (storage/row_reads.py `Listed.unreadable`: which
    record and what is wrong, never a stored value) under `unreadable`, as the other lists do."""
    bad = getattr(found, "unreadable", ())
    if bad:
        body["unreadable"] = [unreadable_row(u) for u in bad]
    return body


def _not_found(record_id: str) -> ApiError:
    return ApiError(404, f"No memory record with id '{echo(record_id)}'.", param="record_id", code="not_found")


def _filters(spec: Any) -> Predicate | None:
    if spec is None:
        return None
    try:
        return compile_filter(spec)
    except ValueError as exc:
        raise bad_request(f"Bad 'filters': {exc}.", param="filters") from None


Known = Callable[[str], Awaitable[bool]]


async def _any_tenant(tenant: str) -> bool:
    return True


class MemoryDoor:
    def __init__(
        self, pipeline: Pipeline, memory: MemoryStore | None, audit: Any = None, known: Known = _any_tenant
    ) -> None:
        self.max_body = pipeline.max_body
        self._bodies = pipeline.bodies  # a large body is parsed on the pool, as the model doors' are
        self._memory = memory
        self._audit = audit  # the AuditLog, when audit.enabled: bulk deletes are recorded (docs/audit.md)
        self._known = known  # whether a tenant id `?tenant=` names exists (a stored tenant or the static keys')

    @staticmethod
    async def _do(op: Awaitable[T]) -> T:
        """A store operation; its failures as API errors (responses/common.py `stored`, and a missing model)."""
        try:
            return await stored(op)
        except EmbedderUnavailable as exc:
            raise ApiError(
                503, f"Memory search is unavailable: {exc}.", type="server_error", code="memory_unavailable"
            ) from None
        except SpaceUnavailable as exc:
            raise space_refusal(exc) from None
        except TenantStorageFull as full:
            raise storage_quota_exceeded(memory_full(full), "memory_quota_exceeded") from None

    async def _record(self, call: Call, op: str, who: str, agent: str | None, user: str, ns: int, n: int) -> None:
        """A bulk delete's audit event, on disk before the client has its answer."""
        if self._audit is None:
            return
        assert call.principal is not None
        p = call.principal
        try:
            await self._audit.append(
                "memory",
                MemoryDeletion(
                    op=op,
                    tenant=who,
                    agent_id=agent,
                    user_id=user,
                    namespaces=ns,
                    records=n,
                    key_id=p.key_id,
                    subject=p.subject,
                ),
            )
        except AuditUnwritable as exc:
            log.error("memory %s of tenant %s: done but not in the audit trail (%s)", op, who, exc)
            raise audit_api_error(MADE_UNAUDITED) from None

    async def _auditable(self) -> None:
        """A bulk delete is refused before it is made while its audit event could not be written."""
        if self._audit is not None:
            await self._audit.writable()

    def _store(self) -> MemoryStore:
        if self._memory is None:
            raise bad_request(
                "Memory needs a database: this gateway has no storage configured (storage.url, docs/storage.md).",
                code="storage_not_configured",
            )
        return self._memory

    async def _tenant(self, call: Call) -> str:
        """The caller's tenant; an org-admin may name another with `?tenant=` (and must, for the bootstrap key)."""
        principal = call.principal
        assert principal is not None  # these routes identify first
        named = query(call).get("tenant", [None])[-1]
        if named and named != principal.tenant:
            if ORG_ADMIN not in principal.roles:
                raise ApiError(
                    403,
                    "Only an org-admin may name another tenant's memory.",
                    type="permission_error",
                    param="tenant",
                    code="other_tenant",
                )
            if not await self._known(named):  # a name or a typo would write to a tenant nobody can read as
                raise ApiError(
                    404, f"No tenant with id '{echo(named)}': '?tenant=' takes a tenant's id.", param="tenant"
                )
            return named
        if principal.tenant == ALL_TENANTS:
            raise bad_request(
                "This key acts across tenants: name the tenant whose memory this is with '?tenant='.", param="tenant"
            )
        return principal.tenant

    @staticmethod
    def _admin(call: Call, what: str) -> None:
        assert call.principal is not None
        if not call.principal.has_role(TENANT_ADMIN):
            raise ApiError(
                403,
                f"{what} needs a tenant-admin or org-admin key; this key is a {', '.join(sorted(call.principal.roles))}.",
                type="permission_error",
                code="insufficient_role",
            )

    def _record_id(self, call: Call) -> str:
        parts = segments(call)  # ["memory", "records", id]
        if len(parts) != 3 or not parts[2] or len(parts[2]) > 40:
            raise _not_found("/".join(parts[2:]))
        return parts[2]

    @staticmethod
    def _namespace_args(call: Call) -> tuple[str, str]:
        raw = query(call)
        return (
            check_id(raw.get("agent_id", [""])[-1], "agent_id"),
            check_id(raw.get("user_id", [""])[-1], "user_id"),
        )

    # -- records --------------------------------------------------------------------------------
    async def create(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who = self._store(), await self._tenant(call)
        req, records = await self._bodies.decode(
            parse_create_records, await read_body(call.scope, receive, self.max_body, self._bodies)
        )
        new = [NewRecord(r.text, dict(r.metadata or {}), r.ttl_seconds) for r in records]
        written = await self._do(memory.write(who, req.agent_id, req.user_id, new, caller=caller_of(call, who)))
        if req.records is None:
            await answer(call, send, record_view(written[0]))
        else:
            await answer(call, send, page([record_view(r) for r in written], False))

    async def list(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who = self._store(), await self._tenant(call)
        agent_id, user_id = self._namespace_args(call)
        lq = list_query(call)
        if lq.before is not None:  # was ignored: the first page, which a client took for the one before its cursor
            raise bad_request(
                "'before' is not supported when listing memory records: page with 'after'.",
                param="before",
                code="unsupported_parameter",
            )
        raw = query(call).get("filters", [None])[-1]
        try:
            spec = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            raise bad_request("'filters' must be a JSON object.", param="filters") from None
        except RecursionError:  # msgspec's decoder past the interpreter's recursion limit (was a 500)
            raise bad_request(
                "'filters' is nested too deeply to be read (a filter has at most 8 levels).",
                param="filters",
                code="nested_too_deeply",
            ) from None
        keep = _filters(spec)
        try:
            found = await self._do(
                memory.page(who, agent_id, user_id, after=lq.after, limit=lq.limit, desc=lq.desc, keep=keep)
            )
        except KeyError:
            raise bad_request(
                f"'after' names no record of this namespace: '{echo(lq.after)}'.", param="after"
            ) from None
        records, more = found if found is not None else ([], False)
        await answer(call, send, _with_unreadable(page([record_view(r) for r in records], more), records))

    async def retrieve(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who, rid = self._store(), await self._tenant(call), self._record_id(call)
        rec = await self._do(memory.get(who, rid))
        if rec is None:
            raise _not_found(rid)
        await answer(call, send, record_view(rec))

    async def delete(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who, rid = self._store(), await self._tenant(call), self._record_id(call)
        if not await self._do(memory.delete(who, rid)):
            raise _not_found(rid)
        await answer(call, send, {"id": rid, "object": "memory.record.deleted", "deleted": True})

    async def search(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who = self._store(), await self._tenant(call)
        req = await self._bodies.decode(parse_search, await read_body(call.scope, receive, self.max_body, self._bodies))
        keep = _filters(req.filters)
        try:
            hits = await self._do(
                memory.search(
                    who,
                    req.agent_id,
                    req.user_id,
                    req.query,
                    top_k=req.top_k,
                    keep=keep,
                    mode=req.mode,
                    caller=caller_of(call, who),
                )
            )
        except ApiError as err:  # a POST that only reads: a KMS's 503 in a read's words, as a GET's
            worded = for_request(err, "GET")
            if worded is err:
                raise
            raise worded from err.__cause__
        body = {"object": "list", "data": [hit_view(h) for h in hits], "mode": req.mode}
        await answer(call, send, _with_unreadable(body, hits))

    # -- namespaces and users -------------------------------------------------------------------
    async def namespaces(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who = self._store(), await self._tenant(call)
        raw = query(call)
        agent = check_id(raw["agent_id"][-1], "agent_id") if "agent_id" in raw else None
        user = check_id(raw["user_id"][-1], "user_id") if "user_id" in raw else None
        limit, after = limit_after({name: raw[name][-1] for name in PAGE_QUERY if name in raw})
        try:
            found = await self._do(memory.namespaces(who, limit, after, agent_id=agent, user_id=user))
        except Invalid as exc:  # a cursor that is no namespace of the tenant's list
            raise bad_request(f"{exc}.", param="after") from None
        await answer(call, send, paged(found, [_namespace_view(n) for n in found]))

    async def update_namespace(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who = self._store(), await self._tenant(call)
        req = await self._bodies.decode(
            parse_update_namespace, await read_body(call.scope, receive, self.max_body, self._bodies)
        )
        ns = await self._do(memory.set_namespace(who, req.agent_id, req.user_id, req.default_ttl_seconds))
        await answer(call, send, _namespace_view(ns))

    async def delete_namespace(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who = self._store(), await self._tenant(call)
        self._admin(call, "Deleting a memory namespace")
        agent_id, user_id = self._namespace_args(call)
        await self._auditable()
        gone = await self._do(memory.delete_namespace(who, agent_id, user_id))
        if gone is None:
            raise ApiError(
                404, f"No memory namespace agent_id='{echo(agent_id)}', user_id='{echo(user_id)}'.", code="not_found"
            )
        await self._record(call, "delete_namespace", who, agent_id, user_id, 1, gone)
        body = {"object": "memory.namespace.deleted", "agent_id": agent_id, "user_id": user_id, "records_deleted": gone}
        await answer(call, send, {**body, "deleted": True})

    async def forget_user(self, call: Call, receive: Receive, send: Send) -> None:
        memory, who = self._store(), await self._tenant(call)
        self._admin(call, "Forgetting a user")
        parts = segments(call)  # ["memory", "users", user_id]
        if len(parts) != 3 or not parts[2]:
            raise ApiError(404, "Name the user: DELETE /v1/memory/users/{user_id}.", code="not_found")
        user_id = check_id(parts[2], "user_id")
        await self._auditable()
        namespaces, records = await self._do(memory.forget_user(who, user_id))
        await self._record(call, "forget_user", who, None, user_id, namespaces, records)
        await answer(
            call,
            send,
            {
                "object": "memory.user.forgotten",
                "user_id": user_id,
                "namespaces_deleted": namespaces,
                "records_deleted": records,
                "deleted": True,
            },
        )


def handlers(
    pipeline: Pipeline,
    memory: MemoryStore | None,
    audit: Any = None,
    known: Known = _any_tenant,
    gate: TenantGate | None = None,
) -> dict[str, Any]:
    """The handler names of the memory routes (api/routes.py), bound to one door; `gate`: a tenant's share of
    their calls running at once (tenant_gate.py)."""
    door = MemoryDoor(pipeline, memory, audit, known)
    guard = (gate or TenantGate(None, "")).guard
    return {
        "memory_records_create": guard(door.create),
        "memory_records_list": guard(door.list),
        "memory_record_retrieve": guard(door.retrieve),
        "memory_record_delete": guard(door.delete),
        "memory_search": guard(door.search),
        "memory_namespaces_list": guard(door.namespaces),
        "memory_namespace_update": guard(door.update_namespace),
        "memory_namespace_delete": guard(door.delete_namespace),
        "memory_user_forget": guard(door.forget_user),
    }
