"""The usage writer's PostgreSQL connection: held from batch to batch while rows keep coming (no pool
checkout and pre-ping per batch on the event loop), given back after a second without rows and at
close, and replaced, with no row lost, when the server ends it or a batch fails on it."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from multihome.metering import writer as writer_mod
from multihome.metering.row import COLUMNS, Row
from multihome.metering.tables import usage_calls
from multihome.metering.writer import UsageWriter
from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio


@pytest.fixture
def url(pg_database) -> str:
    return pg_database()  # made before the test's event loop runs (migrating runs a loop of its own)


def row(rid: str) -> Row:
    values = dict.fromkeys(COLUMNS, None)
    values.update(
        request_id=rid,
        started_at="2026-12-06 07:00:00.000000",
        finished_at="2026-12-06 07:00:00.250000",
        tenant_id="ten_a",
        key_id="key_a",
        endpoint="chat",
        model_group="g",
        status=200,
        outcome="ok",
        prompt_tokens=1,
        completion_tokens=2,
        cached_tokens=0,
        reasoning_tokens=0,
        estimated=0,
        latency_ms=1.5,
        cost="0.000001",
        cost_nanos=1000,
        currency="USD",
        price_version="v1",
        over_budget=0,
    )
    return tuple(values[c] for c in COLUMNS)


async def until(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def stored(engine) -> list[str]:
    async with engine.connect() as conn:
        return sorted((await conn.execute(sa.select(usage_calls.c.request_id))).scalars())


class Checkouts:
    def __init__(self, engine) -> None:
        self.n = 0
        sa.event.listen(engine.sync_engine.pool, "checkout", self.seen)

    def seen(self, *_args) -> None:
        self.n += 1


async def test_one_connection_serves_every_batch_while_rows_keep_coming(url):
    engine = create_engine(url)
    w = UsageWriter(engine, usage_calls, batch_size=10, flush_interval_ms=1)
    await w.start()
    checkouts = Checkouts(engine)
    try:
        for b in range(20):
            for i in range(10):
                w.put(row(f"b{b}-{i}"))
            await w.flush()
        assert checkouts.n == 1  # a checkout per batch was 20 (each with the pool's pre-ping)
        assert engine.pool.checkedout() == 1
    finally:
        await w.close()
    assert engine.pool.checkedout() == 0  # given back at close
    assert len(await stored(engine)) == 200
    await engine.dispose()


async def test_the_connection_goes_back_to_the_pool_when_rows_stop(url, monkeypatch):
    monkeypatch.setattr(writer_mod, "_HOLD_S", 0.05)
    engine = create_engine(url)
    w = UsageWriter(engine, usage_calls, flush_interval_ms=1)
    await w.start()
    try:
        w.put(row("a"))
        await w.flush()
        await until(lambda: engine.pool.checkedout() == 0)
        w.put(row("b"))  # and a later row checks one out again
        await w.flush()
    finally:
        await w.close()
    assert await stored(engine) == ["a", "b"]
    await engine.dispose()


async def test_a_connection_the_server_ended_is_replaced_and_no_row_is_lost(url):
    engine = create_engine(url)
    w = UsageWriter(engine, usage_calls, flush_interval_ms=1)
    await w.start()
    try:
        w.put(row("before"))
        await w.flush()
        async with engine.connect() as conn:  # the server ends the writer's connection (a restart, an admin)
            ended = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert ended == 1
        held = w._held
        assert held is not None
        await until(held[2].is_closed)  # asyncpg has seen the end
        for i in range(5):
            w.put(row(f"after-{i}"))
        await w.flush()
        assert w.failures == 0  # noticed before use, as the pool's pre-ping would: no failed batch, no backoff
    finally:
        await w.close()
    assert await stored(engine) == ["after-0", "after-1", "after-2", "after-3", "after-4", "before"]
    assert engine.pool.checkedout() == 0
    await engine.dispose()


async def test_a_failed_batch_is_retried_on_a_new_connection(url):
    engine = create_engine(url)
    w = UsageWriter(engine, usage_calls, flush_interval_ms=1)
    await w.start()
    try:
        w.put(row("first"))
        await w.flush()
        async with engine.begin() as conn:  # every insert now fails: the table is gone
            await conn.execute(sa.text("ALTER TABLE usage_calls RENAME TO usage_calls_away"))
        w.put(row("second"))
        await until(lambda: w.failures >= 1)
        async with engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE usage_calls_away RENAME TO usage_calls"))
        await w.flush()
    finally:
        await w.close()
    assert await stored(engine) == ["first", "second"]
    assert engine.pool.checkedout() == 0
    await engine.dispose()
