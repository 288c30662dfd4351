"""Usage summaries for the admin API: calls, tokens and cost per key/team/model group/deployment."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .prices import NANOS, text
from .tables import usage_calls as u

GROUPS = {
    "key": u.c.key_id,
    "team": u.c.team_id,
    "model_group": u.c.model_group,
    "deployment": u.c.deployment,
    "tenant": u.c.tenant_id,
}


async def usage_summary(
    engine: AsyncEngine,
    tenant: str | None,
    group_by: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> list[dict]:
    """One entry per (group, currency), biggest cost first. `tenant=None`: the whole organisation."""
    col = GROUPS[group_by]
    q = sa.select(
        col.label("group"),
        u.c.currency,
        sa.func.count().label("calls"),
        sa.func.sum(u.c.prompt_tokens).label("prompt"),
        sa.func.sum(u.c.completion_tokens).label("completion"),
        sa.func.sum(u.c.cached_tokens).label("cached"),
        sa.func.sum(u.c.cost_nanos).label("nanos"),
        sa.func.sum(sa.case((u.c.estimated, 1), else_=0)).label("estimated"),
    ).group_by(col, u.c.currency)
    if tenant is not None:
        q = q.where(u.c.tenant_id == tenant)
    if start is not None:
        q = q.where(u.c.started_at >= start)
    if end is not None:
        q = q.where(u.c.started_at < end)
    async with engine.connect() as conn:
        result = (await conn.execute(q)).all()
    out = [
        {
            group_by: r.group,
            "currency": r.currency,
            "calls": int(r.calls),
            "prompt_tokens": int(r.prompt or 0),
            "completion_tokens": int(r.completion or 0),
            "cached_tokens": int(r.cached or 0),
            "estimated_calls": int(r.estimated or 0),
            # Exact: integer nano-units summed by the database, divided by 10^9 in Decimal.
            "cost": text(Decimal(int(r.nanos or 0)) / NANOS),
        }
        for r in result
    ]
    out.sort(key=lambda e: (-Decimal(e["cost"]), str(e[group_by])))
    return out
