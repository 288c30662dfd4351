"""The admin changes the audit trail records: which event each route writes (from the registry), and
the `admin_change` event of one answered request, holding ids and the route, never a response's
contents (a new key's secret never enters the trail)."""

from __future__ import annotations

import msgspec

from ...audit.events import AdminChange
from ...schema.principal import Principal
from .registry import ROUTES
from .route import Route

# (method, path template) -> event action, for every route that changes something.
EVENTS: dict[tuple[str, str], str] = {(r.method, r.path): r.event for r in ROUTES if r.event is not None}


def find(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        m = route.pattern.match(path)
        if m and route.method == method:
            return route, m.groupdict()
    return None


def change_of(method: str, path: str, principal: Principal, response: bytes) -> AdminChange:
    """The admin_change event for a successful `method path` answered with `response` (JSON bytes)."""
    found = find(method, path)
    route, params = found if found is not None else (None, {})
    return admin_change(route, params, method, path, principal, response)


def admin_change(
    route: Route | None, params: dict[str, str], method: str, path: str, principal: Principal, response: bytes
) -> AdminChange:
    action = route.event if route is not None and route.event else "unknown"
    noun = action.partition(".")[0] if "." in action else ""
    object_id, tenant = params.get("id"), params.get("tenant")
    fields = route.detail if route is not None else ()
    extra: dict[str, object] = {}
    if object_id is None or tenant is None or fields:
        try:
            out = msgspec.json.decode(response)
        except msgspec.DecodeError:
            out = None
        if isinstance(out, dict):
            extra = {f: out.get(f) for f in fields}
            object_id = object_id if object_id is not None else out.get("id")
            # Routes outside /tenants/{tenant} (token revocations) say their tenant in the response.
            if tenant is None and isinstance(out.get("tenant_id"), str):
                tenant = out["tenant_id"]
    return AdminChange(
        actor=principal.subject,
        tenant=tenant or (object_id if noun == "tenant" else None),
        action=action,
        object_type=noun or "unknown",
        object_id=object_id,
        detail={**extra, "method": method, "path": path, "actor_source": principal.source},
    )
