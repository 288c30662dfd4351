"""Admin resource: usage and cost summaries from the metered calls, per tenant or across tenants.
Budgets (with what is spent against them) are `budgets.py`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ...metering.summary import GROUPS, INTERVALS, usage_summary
from ...schema import admin_fields
from ...schema.errors import ApiError
from .pages import limit_after
from .rbac import ORG, READ
from .route import PREFIX, AdminCall, Route, Services, unreadable_row
from .tenancy import T

_QUERY = ("group_by", "start", "end", "interval", "limit", "page")


async def tenant_usage(s: Services, c: AdminCall) -> Any:
    return await _usage(s, c.tenant, c.query, "model_group", {"key", "team", "model_group", "deployment"})


async def org_usage(s: Services, c: AdminCall) -> Any:
    return await _usage(s, None, c.query, "tenant", set(GROUPS))


async def _usage(s: Services, tenant: str | None, q: dict[str, str], default: str, allowed: set[str]) -> Any:
    group_by = q.get("group_by") or default
    if group_by not in allowed:
        raise ApiError(400, f"group_by must be one of {', '.join(sorted(allowed))}.", param="group_by")
    start, end = _time(q, "start"), _time(q, "end")
    interval = q.get("interval") or None
    if interval is not None and interval not in INTERVALS:
        raise ApiError(400, f"interval must be one of {', '.join(INTERVALS)}.", param="interval")
    limit = limit_after(q)[0]  # a page at a time as the lists (`page`, not `after`: an entry has no id)
    writer = s.metering.writer
    if writer is not None and writer.failing:
        # This replica's rows wait for the database: a flush would wait for it (30 s), then fail all the same.
        raise ApiError(
            503,
            f"The gateway's database is not taking usage rows right now: {len(writer.rows)} recorded calls wait "
            "to be written, so a summary would miss them. Retry shortly. Calls are still served.",
            type="server_error",
            code="storage_unavailable",
            headers={"retry-after": "5"},
        )
    await s.metering.flush()  # what this replica has recorded is in the answer
    if s.metering.engine is None:
        raise ApiError(
            501, "Usage summaries need storage: set storage.url in the config.", code="storage_not_configured"
        )
    data = await usage_summary(s.metering.engine, tenant, group_by, start, end, interval, limit, q.get("page") or None)
    return {
        "object": "list",
        "tenant_id": tenant,
        "group_by": group_by,
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "interval": interval,
        "data": data,
        **({"unreadable": [unreadable_row(b) for b in data.unreadable]} if data.unreadable else {}),
        "has_more": data.next_page is not None,
        "next_page": data.next_page,
    }


def _time(q: dict[str, str], name: str) -> dt.datetime | None:
    value = q.get(name)
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"Query parameter '{name}' must be an ISO 8601 time, e.g. 2025-06-01T00:00:00Z.", param=name
        ) from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    found = admin_fields.moment(parsed, name)  # year 1 at +05:00: the database driver would overflow
    if found is not None:
        raise ApiError(400, f"Query parameter {found.message}.", param=name, code="invalid_value")
    return parsed


ROUTES = (
    Route(
        "GET",
        T + "/{tenant}/usage",
        READ,
        tenant_usage,
        "Usage and cost for a tenant, grouped by key, team, model_group or deployment, in total or per "
        "hour or day (?group_by=&start=&end=&interval=), a page at a time (?limit= 1-1000, default 1000; "
        "?page=<next_page of the page before>; has_more says whether another follows)",
        query=_QUERY,
        tenant_must_have_existed=True,
    ),
    Route(
        "GET",
        PREFIX + "/usage",
        ORG,
        org_usage,
        "Usage and cost across tenants, in total or per hour or day (?group_by=tenant|...&start=&end=&interval=), "
        "a page at a time (?limit=, ?page=<next_page>, as for a tenant's)",
        query=_QUERY,
    ),
)
