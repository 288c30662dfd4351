"""The usage writer under sustained load: refusals do not feed the backlog they cap, a stop writes
every accepted row while the database is only slow, and rows read back as SQLAlchemy wrote them."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from multihome.config.metering import MeteringConfig, WriterConfig
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering
from multihome.metering.tables import usage_calls
from multihome.schema.errors import ApiError
from multihome.storage import open_store

from .conftest import Dep, call, principal

pytestmark = pytest.mark.anyio


async def sqlite_url(tmp_path) -> tuple[str, str]:
    path = str(tmp_path / "u.db")
    store = await open_store(f"sqlite+aiosqlite:///{path}", migrate=True)
    await store.close()
    return f"sqlite+aiosqlite:///{path}", path


async def metering(url: str, spool_dir: str | None = None, **writer) -> Metering:
    prices = PriceTable({"dep-a": DeploymentPrice.of("2.5", "10", None, "USD")})
    m = Metering(MeteringConfig(writer=WriterConfig(**writer)), prices, storage_url=url, spool_dir=spool_dir)
    await m.start()
    return m


class WriteLock:
    """Another process's write transaction on the SQLite file, held until released: the database is
    reachable but slow (the writer's BEGIN IMMEDIATE waits in SQLite's busy handler)."""

    def __init__(self, path: str) -> None:
        self.taken, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(path,), daemon=True)
        self.thread.start()
        assert self.taken.wait(10)

    def _hold(self, path: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        self.taken.set()
        self.release.wait(60)
        conn.execute("COMMIT")
        conn.close()

    def free(self) -> None:
        self.release.set()
        self.thread.join(10)


async def stored(m: Metering) -> list[str]:
    async with m.engine.connect() as conn:
        return sorted((await conn.execute(sa.select(usage_calls.c.request_id))).scalars())


async def test_refused_calls_do_not_feed_the_backlog_they_cap(tmp_path):
    url, path = await sqlite_url(tmp_path)
    m = await metering(url, max_backlog=20, batch_size=5, flush_interval_ms=1)
    lock = WriteLock(path)  # the store falls behind
    try:
        for i in range(20):  # admitted calls fill the backlog
            await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, f"ok{i}")
            m.record(call(f"ok{i}"))
        refused = 0
        for i in range(2000):  # then every new call is refused, and each refusal is recorded
            with pytest.raises(ApiError) as err:
                await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, f"no{i}")
            assert err.value.status == 503 and err.value.body.code == "usage_backlog"
            m.record(call(f"no{i}", deployment=None, status=503, outcome="declined"))
            refused += 1
        # Bounded: the admitted calls' rows (one batch may be in the writer's hands), no refusals.
        assert len(m.writer.rows) <= 20 and m.writer.skipped == refused
    finally:
        lock.free()
    await m.flush()
    assert await stored(m) == sorted(f"ok{i}" for i in range(20))
    await m.close()


async def test_calls_that_cost_nothing_still_get_rows_while_the_backlog_has_room(tmp_path):
    url, _ = await sqlite_url(tmp_path)
    m = await metering(url)
    m.record(call("denied", deployment=None, status=429, outcome="denied"))
    await m.flush()
    assert await stored(m) == ["denied"] and m.writer.skipped == 0
    await m.close()


async def test_close_writes_every_row_while_the_database_is_only_behind(tmp_path):
    url, path = await sqlite_url(tmp_path)
    m = await metering(url, flush_interval_ms=1)
    lock = WriteLock(path)
    for i in range(3000):
        m.record(call(f"r{i}"))
    # The database answers again after 4 s, longer than close() waits without any progress: a
    # writer that is waiting for a slow database is not stalled, and must not give up.
    asyncio.get_running_loop().call_later(4, lock.free)
    t0 = time.monotonic()
    await m.writer.close(2)
    assert time.monotonic() - t0 >= 3.5
    assert len(m.writer.rows) == 0 and m.writer.written == 3000
    assert len(await stored(m)) == 3000
    await m.close()


async def test_close_gives_up_and_says_so_when_the_database_refuses_every_batch(tmp_path, caplog):
    url, _ = await sqlite_url(tmp_path)
    m = await metering(url, flush_interval_ms=1)
    async with m.engine.begin() as conn:  # every insert now fails: the table is gone
        await conn.execute(sa.text("ALTER TABLE usage_calls RENAME TO usage_calls_away"))
    m.record(call("lost"))
    await m.writer.close(1)
    assert len(m.writer.rows) == 1 and m.writer.failures >= 1
    # How long it tried is at least the stall timeout; on a loaded machine a retry's wait makes it more.
    assert re.search(r"1 rows unwritten: no batch could be written for \d+ s", caplog.text), caplog.text
    await m.close()


async def test_a_stop_with_the_database_away_leaves_the_rows_in_the_spool_at_once_and_says_so(tmp_path, caplog):
    # Every unwritten row is in the spool, which the next start writes: the stop does not wait out the 30 s
    # it gives a database that fails every batch without one (docs/metering.md), and says in one warning
    # how many rows wait where, not an error.
    url, _ = await sqlite_url(tmp_path)
    m = await metering(url, str(tmp_path / "spool"), flush_interval_ms=1)
    assert m.writer.spool is not None
    async with m.engine.begin() as conn:  # every insert now fails: the table is gone
        await conn.execute(sa.text("ALTER TABLE usage_calls RENAME TO usage_calls_away"))
    for i in range(3):
        m.record(call(f"kept{i}"))
    await asyncio.wait_for(m.close(), 120)
    said = [r for r in caplog.records if r.name.startswith("multihome.metering")]
    assert not [r for r in said if r.levelno >= logging.ERROR], [r.getMessage() for r in said]
    [line] = [r.getMessage() for r in said if "unwritten" in r.getMessage()]
    waited = re.search(r"3 rows unwritten: no batch could be written for (\d+) s", line)
    assert waited and int(waited[1]) < 30, line  # the writer's own count: it gave up before the 30 s
    assert f"3 rows kept in the usage spool {m.writer.spool.dir}, the next start writes them" in line, line
    async with m.engine.begin() as conn:  # the database is back
        await conn.execute(sa.text("ALTER TABLE usage_calls_away RENAME TO usage_calls"))
    again = await metering(url, str(tmp_path / "spool"))  # replays the spool before it starts
    assert await stored(again) == ["kept0", "kept1", "kept2"]
    await again.close()


async def test_rows_read_back_as_sqlalchemy_writes_them(tmp_path):
    # The writer binds its own parameters on SQLite: the stored text must be what SQLAlchemy's
    # DateTime writes and parses, or time-range queries (budgets seeded from usage) would miss rows.
    url, _ = await sqlite_url(tmp_path)
    m = await metering(url)
    started = dt.datetime(2026, 12, 3, 4, 5, 6, tzinfo=dt.UTC).timestamp()
    m.record(call("t", started=started))
    await m.flush()
    async with m.engine.connect() as conn:
        row = (await conn.execute(sa.select(usage_calls))).one()
        raw = (await conn.exec_driver_sql("SELECT started_at, estimated, over_budget FROM usage_calls")).one()
        later = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    usage_calls.c.started_at >= dt.datetime(2026, 12, 3, 4, 5, 6, tzinfo=dt.UTC)
                )
            )
        ).scalar()
    assert raw == ("2026-12-03 04:05:06.000000", 0, 0)
    assert row.started_at.replace(tzinfo=dt.UTC) == dt.datetime(2026, 12, 3, 4, 5, 6, tzinfo=dt.UTC)
    assert row.finished_at.replace(tzinfo=dt.UTC).timestamp() == pytest.approx(started + 0.25)
    assert later == 1
    await m.close()


async def test_empty_columns_are_stored_as_null(tmp_path):
    # None goes through sqlite3's adapter registry (writer.py registers one for speed): a call with no
    # team and no deployment must still store SQL NULLs, not text or 0.
    url, _ = await sqlite_url(tmp_path)
    m = await metering(url)
    assert sqlite3.adapters.get((type(None), sqlite3.PrepareProtocol)) is not None
    m.record(call("free", deployment=None, team=None))
    m.record(call("paid", team="team_x"))
    await m.flush()
    async with m.engine.connect() as conn:
        rows = (
            await conn.exec_driver_sql(
                "SELECT request_id, typeof(team_id), team_id, typeof(deployment), deployment "
                "FROM usage_calls ORDER BY request_id"
            )
        ).all()
    assert rows == [("free", "null", None, "null", None), ("paid", "text", "team_x", "text", "dep-a")]
    await m.close()


async def test_a_slow_database_lowers_the_backlog_that_refuses_calls(tmp_path):
    # max_backlog is far away, but at the rate the database took the last batch the backlog would
    # take longer than max_backlog_s to write after a stop: refuse now rather than lose rows then.
    url, path = await sqlite_url(tmp_path)
    m = await metering(url, max_backlog=10_000, max_backlog_s=0.05, batch_size=10, flush_interval_ms=1)
    lock = WriteLock(path)
    for i in range(10):
        m.record(call(f"slow{i}"))
    asyncio.get_running_loop().call_later(0.5, lock.free)  # this batch takes >= 0.5 s: ~20 rows/s
    await m.flush()
    for i in range(10):
        m.record(call(f"next{i}"))
    with pytest.raises(ApiError) as refused:
        await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, "over")
    assert refused.value.body.code == "usage_backlog" and len(m.writer.rows) < m.writer.max_backlog
    await m.flush()
    assert len(await stored(m)) == 20
    await m.close()


def test_max_backlog_s_must_be_positive():
    from multihome.config.metering import check

    assert check(MeteringConfig(writer=WriterConfig(max_backlog_s=0)), set()) == [
        "metering.writer.max_backlog_s: must be more than 0"
    ]


async def test_stamps_are_stored_as_the_calls_times_to_the_microsecond(db_url):
    """The row's stamps are made as text once and its flags as 0/1 (metering/row.py), cast by PostgreSQL
    in its INSERT: read back through SQLAlchemy they are the calls' times, rounded as
    `datetime.fromtimestamp` does, and booleans, on both backends; and a time-range query finds them."""
    m = await metering(db_url)
    times = [1_764_763_200.0, 1_764_763_200.1234565, 1_764_763_259.9999996, 1_764_849_599.5]
    for i, t in enumerate(times):
        m.record(call(f"s{i}", started=t, estimated=i == 1))
    await m.flush()
    async with m.engine.connect() as conn:
        rows = (await conn.execute(sa.select(usage_calls).order_by(usage_calls.c.request_id))).all()
        after = dt.datetime.fromtimestamp(times[2], dt.UTC)
        later = (await conn.execute(sa.select(sa.func.count()).where(usage_calls.c.started_at >= after))).scalar()
    await m.close()

    def utc(d: dt.datetime) -> dt.datetime:
        return d.replace(tzinfo=dt.UTC) if d.tzinfo is None else d.astimezone(dt.UTC)

    assert [utc(r.started_at) for r in rows] == [dt.datetime.fromtimestamp(t, dt.UTC) for t in times]
    assert [utc(r.finished_at) for r in rows] == [dt.datetime.fromtimestamp(t + 0.25, dt.UTC) for t in times]
    assert later == 2
    assert [(r.estimated, r.over_budget) for r in rows] == [
        (False, False),
        (True, False),
        (False, False),
        (False, False),
    ]


async def test_a_call_over_a_soft_budget_is_flagged_in_its_row(db_url):
    from multihome.config.metering import BudgetRule

    prices = PriceTable({"dep-a": DeploymentPrice.of("2.5", "10", None, "USD")})
    soft = BudgetRule(scope="key", id="key_a", amount="0.000001", period="day", mode="soft")
    m = Metering(MeteringConfig(budgets=[soft]), prices, storage_url=db_url)
    await m.start()
    try:
        for rid in ("first", "second"):
            await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, rid)
            m.record(call(rid))
        await m.flush()
        async with m.engine.connect() as conn:
            rows = (await conn.execute(sa.select(usage_calls.c.request_id, usage_calls.c.over_budget))).all()
    finally:
        await m.close()
    assert sorted(rows) == [("first", True), ("second", True)]


async def test_rows_are_committed_on_the_flush_interval_alone(db_url):
    """Nothing calls flush(): the writer's gathering wait ends on its timer (the interval), batch after
    batch, and a row that arrives while the writer idles wakes it."""
    m = await metering(db_url, flush_interval_ms=20)
    try:
        for round_ in range(3):
            for i in range(3):
                m.record(call(f"t{round_}-{i}"))
            deadline = time.monotonic() + 30
            while m.writer.written < 3 * (round_ + 1):
                assert time.monotonic() < deadline, "rows not committed without a flush"
                await asyncio.sleep(0.01)
        assert len(await stored(m)) == 9
        assert m.writer.written == 9 and m.writer.failures == 0
    finally:
        await m.close()
