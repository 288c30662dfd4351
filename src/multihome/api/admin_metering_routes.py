"""Admin API for metering: usage summaries, RBAC-checked like api/admin_routes. Budgets (their
status included) are served by api/admin_budget_routes.

Mount by wrapping the main admin handler: `admin = MeteringAdminRoutes(metering, fallback=admin)`;
paths it does not serve go to `fallback`.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs

import msgspec

from ..schema.principal import Principal
from ..metering.summary import GROUPS, usage_summary
from ..schema import admin_fields
from ..schema.errors import ApiError
from .admin_rbac import ORG, READ, authorize
from .asgi import JSON, send_bytes

P = "/admin/v1"
_T = r"(?P<tenant>[A-Za-z0-9_\-]+)"
ROUTES = [
    (re.compile(f"^{P}/tenants/{_T}/usage$"), READ, "tenant_usage",
     "Usage and cost for a tenant, grouped by key, team, model_group or deployment (?group_by=&start=&end=)"),
    (re.compile(f"^{P}/usage$"), ORG, "org_usage", "Usage and cost across tenants (?group_by=tenant|...&start=&end=)"),
]


class MeteringAdminRoutes:
    def __init__(self, metering, fallback=None) -> None:
        self.metering = metering
        self.fallback = fallback

    def serves(self, method: str, path: str) -> bool:
        return method == "GET" and any(r[0].match(path) for r in ROUTES)

    async def handle(self, scope, receive, send, request_id: bytes, principal: Principal) -> None:
        path, method = scope["path"], scope["method"]
        for pattern, action, handler, _ in ROUTES:
            m = pattern.match(path)
            if m and method == "GET":
                params = m.groupdict()
                authorize(principal, action, params.get("tenant"))
                query = parse_qs(scope.get("query_string", b"").decode())
                out = await getattr(self, handler)(params, query)
                await send_bytes(send, 200, msgspec.json.encode(out), [JSON, (b"x-request-id", request_id)])
                return
        if self.fallback is None:
            raise ApiError(404, f"Unknown admin endpoint {method} {path}.", code="unknown_url")
        await self.fallback.handle(scope, receive, send, request_id, principal)

    def _engine(self):
        if self.metering.engine is None:
            raise ApiError(501, "Usage summaries need storage: set storage.url in the config.", code="storage_not_configured")
        return self.metering.engine

    async def tenant_usage(self, p, q):
        return await self._usage(p["tenant"], q, "model_group", {"key", "team", "model_group", "deployment"})

    async def org_usage(self, p, q):
        return await self._usage(None, q, "tenant", set(GROUPS))

    async def _usage(self, tenant, q, default, allowed):
        group_by = _one(q, "group_by") or default
        if group_by not in allowed:
            raise ApiError(400, f"group_by must be one of {', '.join(sorted(allowed))}.", param="group_by")
        start, end = _time(q, "start"), _time(q, "end")
        await self.metering.flush()  # what this replica has recorded is in the answer
        data = await usage_summary(self._engine(), tenant, group_by, start, end)
        return {"object": "list", "tenant_id": tenant, "group_by": group_by,
                "start": start.isoformat() if start else None, "end": end.isoformat() if end else None, "data": data}


def _one(q, name) -> str | None:
    values = q.get(name)
    return values[0] if values else None


def _time(q, name) -> dt.datetime | None:
    value = _one(q, name)
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"Query parameter '{name}' must be an ISO 8601 time, e.g. 2025-06-01T00:00:00Z.", param=name) from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    found = admin_fields.moment(parsed, name)  # year 1 at +05:00: the database driver would overflow
    if found is not None:
        raise ApiError(400, f"Query parameter {found.message}.", param=name, code="invalid_value")
    return parsed
