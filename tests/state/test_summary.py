"""The stateful runtime's summary (the admin API's `/state`, the console's State page): counts, bytes and
times from the clear columns, per tenant or for the organisation, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from multihome.state.summary import state_summary
from multihome.storage.engine import create_engine
from multihome.storage.tables import conversation_items, conversations, jobs, responses

pytestmark = pytest.mark.anyio
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


async def test_counts_and_metadata_per_tenant_never_content(db_url):
    engine = create_engine(db_url)
    sealed = b"\x00sealed-bytes-never-read"
    async with engine.begin() as conn:
        for i, (tenant, status) in enumerate(
            [("ten_a", "completed"), ("ten_a", "completed"), ("ten_a", "queued"), ("ten_b", "completed")]
        ):
            await conn.execute(
                sa.insert(responses).values(
                    id=f"resp_{i}",
                    tenant_id=tenant,
                    status=status,
                    created_at=T0 + dt.timedelta(hours=i),
                    size=100 + i,
                    body=sealed,
                )
            )
        await conn.execute(
            sa.insert(conversations).values(
                id="conv_1",
                tenant_id="ten_a",
                created_at=T0,
                updated_at=T0 + dt.timedelta(days=1),
                next_position=2,
                size=10,
                body=sealed,
            )
        )
        for pos in range(2):
            await conn.execute(
                sa.insert(conversation_items).values(
                    conversation_id="conv_1",
                    position=pos,
                    id=f"msg_{pos}",
                    tenant_id="ten_a",
                    created_at=T0,
                    size=7,
                    body=sealed,
                )
            )
        await conn.execute(
            sa.insert(jobs).values(
                id="job_1",
                tenant_id="ten_a",
                kind="response",
                ref_id="resp_2",
                status="queued",
                attempt=0,
                max_attempts=3,
                available_at=T0,
                cancel_requested=False,
                created_at=T0,
                updated_at=T0,
            )
        )
    a = await state_summary(engine, "ten_a")
    assert {r["status"]: (r["count"], r["bytes"]) for r in a["responses"]} == {
        "completed": (2, 201),
        "queued": (1, 102),
    }
    completed = next(r for r in a["responses"] if r["status"] == "completed")
    assert completed["oldest"].startswith("2026-05-01T12:00") and completed["newest"].startswith("2026-05-01T13:00")
    assert a["conversations"] == {
        "count": 1,
        "bytes": 10,
        "oldest": a["conversations"]["oldest"],
        "last_updated": a["conversations"]["last_updated"],
        "items": 2,
        "item_bytes": 14,
    }
    assert a["conversations"]["last_updated"].startswith("2026-05-02")
    assert a["jobs"] == [{"kind": "response", "status": "queued", "count": 1}]
    everyone = await state_summary(engine, None)
    assert sum(r["count"] for r in everyone["responses"]) == 4
    b = await state_summary(engine, "ten_b")
    assert b["conversations"]["count"] == 0 and b["jobs"] == [] and b["conversations"]["oldest"] is None
    assert "sealed" not in repr(a) + repr(everyone)
    await engine.dispose()
