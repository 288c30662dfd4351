"""storage.pg_reads: one-statement reads on held PostgreSQL connections give the rows the engine would,
survive a server restart (the held connection is replaced, not reused dead), and go back to the pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

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


async def _iterations_of(coro) -> int:
    """How many turns of the event loop `coro` takes, run in a task of its own."""
    task = asyncio.ensure_future(coro)
    turns = 0
    while not task.done():
        await asyncio.sleep(0)
        turns += 1
    task.result()
    return turns


async def test_a_read_cancelled_once_its_connection_is_checked_out_gives_it_back(url, monkeypatch):
    # The await after engine.connect() (asking for the driver's connection) does not suspend in SQLAlchemy 2.1,
    # so no cancel lands there today; made to suspend, a cancel there left the connection checked out for ever.
    engine = create_engine(url)
    reached = asyncio.Event()
    raw = AsyncConnection.get_raw_connection

    async def suspending(self):
        reached.set()
        await asyncio.sleep(0)
        return await raw(self)

    monkeypatch.setattr(AsyncConnection, "get_raw_connection", suspending)
    held = HeldReads(engine)
    try:
        task = asyncio.ensure_future(held.fetch(sa.select(sa.literal(1)), {}))
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await held.close()
        assert engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


def test_a_read_cancelled_anywhere_while_it_takes_a_connection_leaves_none_checked_out(url):
    # A read is cancelled when its call is (a client that hung up: api/head_limit.py). Cancelled anywhere while
    # its new connection is checked out (connect, authentication, the pool's pre-ping) or once it was, the
    # connection must go back to the pool: one left checked out is held for ever, and the pool runs dry.
    # (Its own loop: asyncpg reports a connect cancelled half-way to the loop's exception handler.)
    asyncio.run(_cancelled_at_turns(url))


async def _cancelled_at_turns(url: str) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
    engine = create_engine(url)
    try:
        first = HeldReads(engine)
        turns = await _iterations_of(first.fetch(sa.select(sa.literal(1)), {}))
        await first.close()
        await engine.dispose()  # each read below opens a new connection, as the first did
        # The loop turns while a new connection's round trips are awaited (thousands: the wait spins on them),
        # sampled: ~100 cancels spread over them, and the last few at every turn.
        for k in sorted({*range(0, turns, max(1, turns // 100)), *range(max(0, turns - 20), turns + 2)}):
            held = HeldReads(engine)
            task = asyncio.ensure_future(held.fetch(sa.select(sa.literal(1)), {}))
            for _ in range(k):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await held.close()
            deadline = time.monotonic() + 10
            while engine.pool.checkedout() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert engine.pool.checkedout() == 0, f"a connection stayed checked out (cancelled at turn {k})"
    finally:
        await engine.dispose()
