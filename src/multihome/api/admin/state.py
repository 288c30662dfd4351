"""Admin resource: what the stateful runtime holds (stored responses, conversations, background jobs)
and how long it is kept: counts, sizes and times only, never content (state/summary.py)."""

from __future__ import annotations

from typing import Any

from ...state.summary import state_summary
from .rbac import ORG, READ
from .route import PREFIX, STORAGE, AdminCall, Route, Services, unreadable_row
from .tenancy import T


async def tenant_state(s: Services, c: AdminCall) -> Any:
    return await _state(s, c.tenant)


async def org_state(s: Services, c: AdminCall) -> Any:
    return await _state(s, None)


async def _state(s: Services, tenant: str | None) -> Any:
    retention = s.retention
    ttl = None
    if retention is not None:
        ttl = retention.tenants.get(tenant, retention.ttl_s) if tenant is not None else retention.ttl_s
    summary = await state_summary(s.store.engine, tenant)
    bad = summary.pop("unreadable")
    return {
        "object": "state.summary",
        "tenant_id": tenant,
        "retention_ttl_s": ttl,
        "retention_tenants": dict(retention.tenants) if retention is not None and tenant is None else {},
        **summary,
        **({"unreadable": [unreadable_row(u) for u in bad]} if bad else {}),  # left out of the counts
    }


ROUTES = (
    Route(
        "GET",
        T + "/{tenant}/state",
        READ,
        tenant_state,
        "What the stateful runtime holds for the tenant: stored responses by status, conversations and "
        "their items, background jobs, retention (counts, bytes, times; never content)",
        needs=STORAGE,
        tenant_must_have_existed=True,
    ),
    Route(
        "GET",
        PREFIX + "/state",
        ORG,
        org_state,
        "What the stateful runtime holds across tenants (counts, bytes, times; never content)",
        needs=STORAGE,
    ),
)
