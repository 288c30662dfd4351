"""What the stateful runtime holds, in counts and metadata only (the admin API's `/state`, the console).

Reads the clear columns of the state tables (ids, tenant, status, times, sizes): never `body`, which is
sealed and is all a tenant wrote or a model answered, so nothing here needs or touches a data key.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..storage.tables import conversation_items, conversations, jobs, responses


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def state_summary(engine: AsyncEngine, tenant: str | None) -> dict[str, Any]:
    """Counts, bytes and oldest/newest times of stored responses (by status), conversations, their
    items and background jobs (by kind and status); `tenant=None`: the whole organisation."""

    def where(table: sa.Table, q: Any) -> Any:
        return q.where(table.c.tenant_id == tenant) if tenant is not None else q

    r, c, i, j = responses, conversations, conversation_items, jobs
    count = sa.func.count()
    queries = {
        "responses": where(
            r,
            sa.select(
                r.c.status, count, sa.func.sum(r.c.size), sa.func.min(r.c.created_at), sa.func.max(r.c.created_at)
            ).group_by(r.c.status),
        ),
        "conversations": where(
            c, sa.select(count, sa.func.sum(c.c.size), sa.func.min(c.c.created_at), sa.func.max(c.c.updated_at))
        ),
        "items": where(i, sa.select(count, sa.func.sum(i.c.size))),
        "jobs": where(j, sa.select(j.c.kind, j.c.status, count).group_by(j.c.kind, j.c.status)),
    }
    async with engine.connect() as conn:
        rows = {name: (await conn.execute(q)).all() for name, q in queries.items()}
    [conv] = rows["conversations"]
    [items] = rows["items"]
    return {
        "responses": [
            {"status": s, "count": int(n), "bytes": int(b or 0), "oldest": _iso(lo), "newest": _iso(hi)}
            for s, n, b, lo, hi in rows["responses"]
        ],
        "conversations": {
            "count": int(conv[0]),
            "bytes": int(conv[1] or 0),
            "oldest": _iso(conv[2]),
            "last_updated": _iso(conv[3]),
            "items": int(items[0]),
            "item_bytes": int(items[1] or 0),
        },
        "jobs": [{"kind": k, "status": s, "count": int(n)} for k, s, n in rows["jobs"]],
    }
