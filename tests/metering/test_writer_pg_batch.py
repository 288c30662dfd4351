"""The usage writer's batch on PostgreSQL: one statement whose one parameter is the batch as JSON (asyncpg's
executemany encoded each row's 23 values on the event loop, ~0.3 ms of the loop for a 75-row batch, and
sent each row as its own Bind and Execute), and every value read back exactly as it was queued (on SQLite too)."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa

from multihome.metering.row import COLUMNS, Row
from multihome.metering.tables import usage_calls
from multihome.metering.writer import UsageWriter
from multihome.storage.engine import create_engine

from .test_writer_pg_connection import row, stored

pytestmark = pytest.mark.anyio


@pytest.fixture
def url(pg_database) -> str:
    return pg_database()


def with_values(rid: str, **values) -> Row:
    base = dict(zip(COLUMNS, row(rid), strict=True))
    base.update(values)
    return tuple(base[c] for c in COLUMNS)


async def test_a_batch_is_one_statement_whatever_its_rows(url, monkeypatch):
    sent: list[tuple[str, int]] = []
    execute, executemany = asyncpg.Connection.execute, asyncpg.Connection.executemany

    async def spy_execute(self, query, *args, **kwargs):
        if "usage_calls" in query:
            sent.append(("execute", len(args)))
        return await execute(self, query, *args, **kwargs)

    async def spy_executemany(self, query, args, **kwargs):
        args = list(args)
        if "usage_calls" in query:
            sent.append(("executemany", len(args)))
        return await executemany(self, query, args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", spy_execute)
    monkeypatch.setattr(asyncpg.Connection, "executemany", spy_executemany)
    engine = create_engine(url)
    w = UsageWriter(engine, usage_calls, batch_size=75, flush_interval_ms=1)
    await w.start()
    try:
        for b in range(3):
            for i in range(75):
                w.put(row(f"b{b}-{i}"))
            await w.flush()
    finally:
        await w.close()
    assert sent == [("execute", 1)] * 3  # one statement, one parameter, per batch of 75 rows
    assert len(await stored(engine)) == 225
    await engine.dispose()


async def test_every_value_reads_back_exactly_as_queued(db_url):
    # PostgreSQL: the batch crosses as JSON and the server casts each element's text; SQLite: each value is
    # bound. Floats must come back as the same double, a 63-bit integer whole, text with quotes,
    # backslashes, escapes and non-ASCII as it was, None as NULL, and a row queued twice stored once; rows
    # replayed from a spool among them.
    url = db_url
    values = [
        with_values("floats", latency_ms=0.1 + 0.2, cost_nanos=2**62 + 1, prompt_tokens=2**31 - 1),
        with_values("tiny", latency_ms=1e-7, cost_nanos=0, team_id=None, deployment=None, provider=None),
        with_values("huge", latency_ms=123456789.0123456, estimated=1, over_budget=1),
        with_values("text", key_id='k"ey\\x \u00e9\u6f22\U0001f600\n\t', model_group="g/\u00fc", cost="1.5e-7"),
    ]
    engine = create_engine(url)
    w = UsageWriter(engine, usage_calls, flush_interval_ms=1)
    await w.start()
    try:
        w.put(values[0])
        w.put_replayed(values[1:3])  # a stopped process's rows (replay.py), between the others
        for v in (values[3], values[0]):
            w.put(v)
        await w.flush()
    finally:
        await w.close()
    async with engine.connect() as conn:
        got = {r.request_id: r for r in (await conn.execute(sa.select(usage_calls))).all()}
    await engine.dispose()
    assert sorted(got) == ["floats", "huge", "text", "tiny"]
    for v in values:
        r = got[v[0]]
        for i, name in enumerate(COLUMNS):
            if name in ("started_at", "finished_at"):
                continue  # text in, timestamps out: test_writer.py's stamp test
            expect = bool(v[i]) if name in ("estimated", "over_budget") else v[i]
            assert getattr(r, name) == expect and type(getattr(r, name)) is type(expect), (v[0], name)
