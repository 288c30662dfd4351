"""What the stateful runtime holds, in counts and metadata only (the admin API's `/state`, the console).

Reads the clear columns of the state tables (ids, tenant, status, times, sizes): never `body`, which is
sealed and is all a tenant wrote or a model answered, so nothing here needs or touches a data key.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..storage import row_reads
from ..storage.tables import conversation_items, conversations, jobs, responses

# Rows SQLite holds with a size that is not an integer or a time that is not a time: left out of the counts
# and reported (storage/row_reads.py, misfits); one such row used to fail the whole answer.
_BAD = {
    responses: row_reads.misfits(responses, ints=("size",), stamps=("created_at",)),
    conversations: row_reads.misfits(conversations, ints=("size",), stamps=("created_at", "updated_at")),
    conversation_items: row_reads.misfits(conversation_items, ints=("size",)),
}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def state_summary(engine: AsyncEngine, tenant: str | None) -> dict[str, Any]:
    """Counts, bytes and oldest/newest times of stored responses (by status), conversations, their
    items and background jobs (by kind and status); `tenant=None`: the whole organisation."""

    def where(table: sa.Table, q: Any) -> Any:
        q = q.where(*row_reads.fitting(engine, _BAD[table])) if table in _BAD else q
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
        unreadable = [
            u
            for table, bad in _BAD.items()
            for u in await row_reads.misfit_rows(
                conn, table, bad, [] if tenant is None else [table.c.tenant_id == tenant]
            )
        ]
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
        "unreadable": unreadable,  # storage.rows.Unreadable: the API shows them only when there are some
    }
