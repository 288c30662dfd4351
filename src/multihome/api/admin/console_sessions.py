"""Admin resource: ending console sessions, `/admin/v1/console-session-ends` (docs/console.md "Ending sessions").

An org-admin ends every console session of a subject (an API key's id, a token's subject), or of everyone,
issued at or before a time (default: now), optionally only those of one tenant: the simplest shared
"not before", which every replica applies from its snapshot within `storage.refresh_s` (this one before it
answers). A session started afterwards is not affected: the person logs in again. Logouts are listed here
too (kind `session`). Org-admins only: a console session may be an org-admin's own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from ...schema.errors import ApiError, echo
from ...schema.principal import ALL_TENANTS
from . import bodies as B
from .rbac import ORG
from .route import PREFIX, AdminCall, Needs, Route, Services, listing

R = PREFIX + "/console-session-ends"
_ALL = ("false", "0", "no")


async def list_console_session_ends(s: Services, c: AdminCall) -> Any:
    rows = await s.store.list_console_session_ends(
        tenant_id=c.query.get("tenant") or None, live_only=c.query.get("live", "").lower() not in _ALL
    )
    return listing([_view(r) for r in rows], rows.unreadable)


async def end_console_sessions(s: Services, c: AdminCall) -> Any:
    body: B.EndConsoleSessions = c.body
    tenant = body.tenant_id
    if tenant is not None and tenant != ALL_TENANTS and s.known_tenant is not None and not await s.known_tenant(tenant):
        raise ApiError(404, f"Tenant {echo(tenant)} not found.", param="tenant_id", code="not_found")
    not_before = body.not_before
    if isinstance(not_before, int):
        try:
            not_before = dt.datetime.fromtimestamp(not_before, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ApiError(
                400, "not_before is not a usable time in epoch seconds.", param="not_before", code="invalid_value"
            ) from None
    record = await s.store.end_console_sessions(
        subject=body.subject,
        tenant_id=tenant,
        not_before=not_before,
        ttl_s=s.console_session_ttl_s,
        reason=body.reason,
        actor=c.who.subject,
    )
    return _view(record)


def _view(record: Any) -> dict[str, Any]:
    out = {"object": "console_session_end", **msgspec.to_builtins(record)}
    out.pop("session_id", None)  # names one browser's session: of no use to anyone reading the list
    return out


_NEEDS = Needs(
    lambda s: s.store,
    "Ending console sessions needs storage: set storage.url in the config (without it a logout holds only "
    "in the browser and the gateway process that served it; revoke the key to end its sessions everywhere).",
)
ROUTES = (
    Route(
        "GET",
        R,
        ORG,
        list_console_session_ends,
        "Ended console sessions still in force: logouts (kind session) and cut-offs (subject, all); "
        "?tenant= narrows, ?live=false also lists those past their expiry not yet pruned",
        query=("tenant", "live"),
        needs=_NEEDS,
        noun="console session end",
    ),
    Route(
        "POST",
        R,
        ORG,
        end_console_sessions,
        "End every console session of a subject (or of everyone; ?tenant_id narrows) issued at or before "
        "not_before (default now); every replica refuses them within storage.refresh_s",
        B.EndConsoleSessions,
        status=201,
        event="console_sessions.end",
        needs=_NEEDS,
        noun="console session end",
    ),
)
