"""`GET /admin/v1/audit/events`, and admin changes written to the audit trail.

`AuditedAdmin` wraps the admin API: audit paths go to `AuditRoutes`, everything else to the
wrapped `AdminRoutes`; every successful change (non-GET, 2xx) becomes an `admin_change` event that
is on disk before the client sees the response.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import msgspec

from ..audit.events import AdminChange
from ..audit.reader import AuditReader, BadQuery, Filters, parse_time
from ..schema.principal import ORG_ADMIN, Principal
from ..schema.errors import ApiError
from .admin_budget_routes import ROUTES as BUDGET_ROUTES
from .admin_contracts_routes import ROUTES as CONTRACT_ROUTES
from .admin_rbac import AUDIT, authorize
from .admin_revocation_routes import ROUTES as REVOCATION_ROUTES
from .admin_routes import ROUTES as ADMIN_ROUTES
from .asgi import JSON, send_bytes

PREFIX = "/admin/v1/audit/"
_FILTERS = ("kind", "model_group", "deployment", "outcome", "subject", "key_id", "request_id")


class AuditRoutes:
    def __init__(self, reader: AuditReader) -> None:
        self.reader = reader

    async def handle(self, scope, receive, send, request_id: bytes, principal: Principal) -> None:
        path, method = scope["path"], scope["method"]
        if path.rstrip("/") != PREFIX + "events":
            raise ApiError(404, f"Unknown admin endpoint {method} {path}. See GET /admin/v1/openapi.json.",
                           code="unknown_url")
        if method != "GET":
            raise ApiError(405, f"Method {method} is not allowed on {path}; use GET.", code="method_not_allowed")
        q = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        tenant = q.get("tenant")
        if ORG_ADMIN not in principal.roles:
            tenant = tenant or principal.tenant
            authorize(principal, AUDIT, tenant)  # auditor/tenant-admin: their own tenant only
        try:
            filters = Filters(
                tenant=tenant, **{name: q.get(name) for name in _FILTERS},
                since=parse_time(q["since"], "since") if q.get("since") else None,
                until=parse_time(q["until"], "until") if q.get("until") else None,
            )
            limit = _limit(q.get("limit"))
            events, cursor = await asyncio.to_thread(self.reader.page, filters, limit, q.get("after"))
        except BadQuery as exc:
            raise ApiError(400, str(exc), code="invalid_value") from None
        out = {"object": "list", "data": events, "has_more": cursor is not None, "next_cursor": cursor}
        await send_bytes(send, 200, msgspec.json.encode(out), [JSON, (b"x-request-id", request_id)])


def _limit(value: str | None) -> int:
    if value is None:
        return 100
    try:
        return max(1, min(int(value), 1000))
    except ValueError:
        raise BadQuery("limit must be an integer") from None


class AuditedAdmin:
    """The admin API with the audit routes mounted and every change written to the audit trail."""

    def __init__(self, admin, audit_routes: AuditRoutes | None, audit_log=None) -> None:
        self.admin, self.audit_routes, self.audit_log = admin, audit_routes, audit_log

    async def handle(self, scope, receive, send, request_id: bytes, principal: Principal) -> None:
        path, method = scope["path"], scope["method"]
        if path.startswith(PREFIX) and self.audit_routes is not None:
            await self.audit_routes.handle(scope, receive, send, request_id, principal)
            return
        if self.audit_log is None or method == "GET" or path.endswith("/policy/explain"):
            await self.admin.handle(scope, receive, send, request_id, principal)
            return
        held: list[dict] = []

        async def hold(message) -> None:
            # Hold the response until its admin_change event is durable, so an acknowledged
            # change is always in the trail.
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if message["type"] == "http.response.body" and held:
                start = held.pop()
                if 200 <= start["status"] < 300 and not message.get("more_body"):
                    await self.audit_log.append("admin_change", change_of(method, path, principal, message["body"]))
                await send(start)
            await send(message)

        await self.admin.handle(scope, receive, hold, request_id, principal)


# Every admin route as (method, pattern, handler); handlers read "verb_noun" ("create_key" -> key.create,
# "delete_token_revocation" -> token_revocation.delete).
_ROUTES = [(r.method, r.pattern, r.handler) for r in (*ADMIN_ROUTES, *BUDGET_ROUTES, *REVOCATION_ROUTES)] + [
    (method, pattern, f"{name}_contract") for method, pattern, name, _ in CONTRACT_ROUTES]


def change_of(method: str, path: str, principal: Principal, response: bytes) -> AdminChange:
    handler, params = "unknown", {}
    for route_method, pattern, name in _ROUTES:
        m = pattern.match(path)
        if m and route_method == method:
            handler, params = name, m.groupdict()
            break
    verb, _, noun = handler.partition("_")  # "create_key" -> key.create
    object_id, tenant = params.get("id"), params.get("tenant")
    if object_id is None or tenant is None:
        try:
            out = msgspec.json.decode(response)
        except msgspec.DecodeError:
            out = None
        if isinstance(out, dict):
            object_id = object_id if object_id is not None else out.get("id")
            # Routes outside /tenants/{tenant} (token revocations) say their tenant in the response.
            if tenant is None and isinstance(out.get("tenant_id"), str):
                tenant = out["tenant_id"]
    # Only ids and the route: a response may carry a new key's secret, which never enters the trail.
    return AdminChange(
        actor=principal.subject, tenant=tenant or (object_id if noun == "tenant" else None),
        action=f"{noun}.{verb}" if noun else handler, object_type=noun or "unknown", object_id=object_id,
        detail={"method": method, "path": path, "actor_source": principal.source},
    )
