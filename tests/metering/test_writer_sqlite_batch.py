"""The usage writer's batch on SQLite: every row bound once, whatever the batch's size, in statements of a
few cached shapes (a batch's rest padded to a power of two with copies of its last row bound and looked up
up to twice the rows: a 135-row batch, a gateway at ~2,700 calls/s, went as 250)."""

from __future__ import annotations

import re

import pytest

from multihome.metering.tables import usage_calls
from multihome.metering.writer import UsageWriter
from multihome.storage.engine import create_engine

from .test_writer import sqlite_url
from .test_writer_pg_connection import row, stored

pytestmark = pytest.mark.anyio

SIZES = (1, 15, 16, 17, 135, 250, 251, 520)


async def test_each_row_is_bound_once_whatever_the_batch_size(tmp_path, monkeypatch):
    inserts: list[str] = []
    opened = UsageWriter._sqlite_connection

    def traced(self, engine):
        raw = opened(self, engine)
        raw.set_trace_callback(lambda sql: inserts.append(sql) if "INSERT" in sql else None)  # with its values
        return raw

    monkeypatch.setattr(UsageWriter, "_sqlite_connection", traced)
    url, _ = await sqlite_url(tmp_path)
    engine = create_engine(url)
    w = UsageWriter(engine, usage_calls, batch_size=1000, flush_interval_ms=1)
    await w.start()
    expected: list[str] = []
    try:
        for n in SIZES:
            ids = [f"b{n:04d}-{i:04d}" for i in range(n)]
            for rid in ids:
                w.put(row(rid))  # no await between puts: the writer takes them as one batch
            inserts.clear()
            await w.flush()
            bound = re.findall(r"'(b\d{4}-\d{4})'", " ".join(inserts))
            assert sorted(bound) == ids, f"a batch of {n} rows"
            assert len(inserts) <= n // 250 + 2, f"a batch of {n} rows: {len(inserts)} statements"
            expected += ids
    finally:
        await w.close()
    assert await stored(engine) == sorted(expected)
    await engine.dispose()
