"""storage.pg_reads: one-statement reads on held PostgreSQL connections give the rows the engine would,
survive a server restart (the held connection is replaced, not reused dead), and go back to the pool."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from multihome.storage.engine import create_engine
from multihome.storage.pg_reads import HeldReads
from multihome.storage.tables import memory_namespaces

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 12, 4, tzinfo=UTC)
ns = memory_namespaces.c
BY_TENANT = (
    sa.select(ns.id, ns.next_seq, ns.agent_id).where(ns.tenant_id == sa.bindparam("tenant")).order_by(ns.id).limit(2)
)


@pytest.fixture
def url(pg_database) -> str:
    return pg_database()  # made outside the test's event loop (migrating runs one of its own)


async def _namespaces(engine, count: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(memory_namespaces),
            [
                {
                    "id": f"mns_{i}",
                    "tenant_id": "t1",
                    "agent_id": f"agent-{i}",
                    "user_id": "",
                    "next_seq": 10 + i,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i in range(count)
            ],
        )


async def test_rows_come_back_by_name_with_the_statement_literals_kept(url):
    engine = create_engine(url)
    held = HeldReads(engine)
    try:
        await _namespaces(engine, 3)
        rows = await held.fetch(BY_TENANT, {"tenant": "t1"})
        assert [(r.id, r.next_seq, r.agent_id) for r in rows] == [("mns_0", 10, "agent-0"), ("mns_1", 11, "agent-1")]
        assert await held.fetch(BY_TENANT, {"tenant": "t2"}) == []
        with pytest.raises(AttributeError):
            _ = rows[0].user_id  # not selected
        assert engine.pool.checkedout() == 1  # held between reads: no checkout (and pre-ping) per read
    finally:
        await held.close()
        assert engine.pool.checkedout() == 0
        await engine.dispose()


async def test_a_read_after_the_server_restarted_runs_on_a_new_connection(pg_server, url):
    engine = create_engine(url)
    held = HeldReads(engine)
    try:
        await _namespaces(engine, 1)
        assert len(await held.fetch(BY_TENANT, {"tenant": "t1"})) == 1
        pg_server.pause()  # ends the held connection
        pg_server.resume()
        assert len(await held.fetch(BY_TENANT, {"tenant": "t1"})) == 1
        assert engine.pool.checkedout() == 1
    finally:
        await held.close()
        await engine.dispose()


async def test_a_failed_statement_drops_its_connection(url):
    engine = create_engine(url)
    held = HeldReads(engine)
    try:
        bad = sa.select(sa.cast(sa.bindparam("v", type_=sa.String), sa.Integer))
        with pytest.raises(Exception, match="invalid input syntax"):
            await held.fetch(bad, {"v": "not a number"})
        assert engine.pool.checkedout() == 0
        assert len(await held.fetch(sa.select(sa.literal(1)), {})) == 1
    finally:
        await held.close()
        await engine.dispose()


def test_an_expanding_in_list_is_refused():
    engine = create_engine("postgresql+asyncpg://u@127.0.0.1:1/db")
    with pytest.raises(ValueError, match="IN lists"):
        HeldReads(engine)._compiled(sa.select(ns.id).where(ns.id.in_(["a", "b"])))
