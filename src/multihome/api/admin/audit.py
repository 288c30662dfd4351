"""Admin resource: what happened. The admin change record kept in storage (`/events`, per tenant or
organisation-wide) and the hash-chained audit trail (`/audit/events`, when `audit.dir` is set)."""

from __future__ import annotations

import asyncio
from typing import Any

from ...audit.reader import BadQuery, Filters, parse_time
from ...schema.errors import ApiError
from ...schema.principal import ORG_ADMIN, Principal
from .pages import MAX_PAGE, query_int
from .rbac import AUDIT, ORG, authorize
from .route import PREFIX, STORAGE, AdminCall, Needs, Route, Services, listed
from .tenancy import T

_FILTERS = ("kind", "model_group", "deployment", "outcome", "subject", "key_id", "request_id")
_PAGE = ("limit", "after")


async def tenant_events(s: Services, c: AdminCall) -> Any:
    return listed(await s.store.admin_events(c.tenant, **_page(c.query)))


async def all_events(s: Services, c: AdminCall) -> Any:
    return listed(await s.store.admin_events(None, **_page(c.query)))


def _page(q: dict[str, str]) -> dict[str, int | None]:
    """?limit= (1-1000, default 100) and ?after= (the seq of the last event seen) of an events list."""
    return {"limit": query_int(q, "limit", 1, MAX_PAGE, 100), "after": query_int(q, "after", 0, 2**63 - 1)}


def _may_audit(who: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    if ORG_ADMIN not in who.roles:  # auditor/tenant-admin: their own tenant only
        authorize(who, AUDIT, query.get("tenant") or who.tenant)


async def trail_events(s: Services, c: AdminCall) -> Any:
    q = c.query
    tenant = q.get("tenant") or (None if ORG_ADMIN in c.who.roles else c.who.tenant)
    try:
        filters = Filters(
            tenant=tenant,
            **{name: q.get(name) for name in _FILTERS},
            since=parse_time(q["since"], "since") if q.get("since") else None,
            until=parse_time(q["until"], "until") if q.get("until") else None,
        )
        events, cursor = await asyncio.to_thread(s.audit_reader.page, filters, _limit(q.get("limit")), q.get("after"))
    except BadQuery as exc:
        raise ApiError(400, str(exc), code="invalid_value") from None
    return {"object": "list", "data": events, "has_more": cursor is not None, "next_cursor": cursor}


async def verify_trail(s: Services, c: AdminCall) -> Any:
    """The whole trail's verification, as `multihome audit verify` reports it (counts and problems). An
    org-admin's: the answer is the organisation's (every tenant's events counted, problems by chain and
    seq), no tenant's part of it can be verified alone (a chain links every tenant's events), and each
    request re-reads and re-hashes the whole trail."""
    report = await asyncio.to_thread(s.audit_log.verify)
    return {
        "object": "audit.verification",
        "ok": report.ok,
        "chains": report.chains,
        "events": report.events,
        "checkpoints": report.checkpoints,
        "problems": [
            {"severity": p.severity, "kind": p.kind, "chain": p.chain, "seq": p.seq, "message": str(p)}
            for p in report.problems
        ],
    }


def _limit(value: str | None) -> int:
    if value is None:
        return 100
    try:
        return max(1, min(int(value), 1000))
    except ValueError:
        raise BadQuery("limit must be an integer") from None


ROUTES = (
    Route(
        "GET",
        T + "/{tenant}/events",
        AUDIT,
        tenant_events,
        "Admin changes in this tenant, oldest first (?limit= 1-1000, default 100; ?after=<seq of the last event seen>)",
        query=_PAGE,
        needs=STORAGE,
        tenant_must_have_existed=True,
    ),
    Route(
        "GET",
        PREFIX + "/events",
        ORG,
        all_events,
        "Admin changes in the whole organisation, oldest first "
        "(?limit= 1-1000, default 100; ?after=<seq of the last event seen>)",
        query=_PAGE,
        needs=STORAGE,
    ),
    Route(
        "GET",
        PREFIX + "/audit/events",
        AUDIT,
        trail_events,
        "The audit trail: filter by tenant, kind, model group, "
        "deployment, outcome, subject, time; cursor pagination (org-admin: all tenants; auditor and tenant-admin: "
        "their own)",
        query=("tenant", "since", "until", *_FILTERS[:5], "limit", "after"),
        check=_may_audit,
        needs=Needs(lambda s: s.audit_reader, "The audit trail is off: set audit.dir in the config."),
        tenant_must_have_existed=True,  # its ?tenant=
    ),
    Route(
        "GET",
        PREFIX + "/audit/verify",
        ORG,
        verify_trail,
        "Verify the whole organisation's audit trail now (hash chains, signed checkpoints): ok, counts and "
        "any problems (org-admin only: the answer is every tenant's)",
        needs=Needs(lambda s: s.audit_log, "The audit trail is off: set audit.dir in the config."),
    ),
)
