"""How fast the usage writer stores rows on SQLite, alone and while the event loop is saturated.

    .venv/bin/python bench/usage_writer_bench.py [--rows 50000] [--seconds 10]

1. drain: `--rows` rows queued at once, then `flush()` on an idle loop: rows/s and process CPU per row.
2. saturated: 64 tasks stand in for requests (each burns ~150 µs of CPU, queues one usage row and
   yields), so the writer competes for the loop as it does in a busy gateway. Reports the rows
   offered and written per second and the backlog left at the end (a writer that keeps up leaves
   about one flush interval's worth).

Runs on uvloop with the gateway's GC tuning. Bounded in rows and time; no network.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path

import uvloop

try:  # rows as tuples in column order since metering/row.py; a tree of before (--base-src) takes dicts
    from multihome.metering.row import as_row
except ImportError:
    as_row = lambda fields: fields
from multihome.api.gateway import _tune_gc
from multihome.metering.tables import usage_calls
from multihome.metering.writer import UsageWriter
from multihome.storage import open_store
from multihome.storage.engine import create_engine

UTC = dt.UTC


def row(i: int):
    now = dt.datetime.now(UTC)
    return as_row(
        {
            "request_id": f"req_{i:012d}",
            "started_at": now,
            "finished_at": now,
            "tenant_id": f"ten_{i % 10}",
            "team_id": None,
            "key_id": f"key_{i % 100}",
            "endpoint": "chat",
            "model_group": "bench",
            "deployment": "bench@sim",
            "provider": "sim",
            "status": 200,
            "outcome": "ok",
            "prompt_tokens": 12,
            "completion_tokens": 30,
            "cached_tokens": 0,
            "estimated": False,
            "latency_ms": 0.42,
            "cost": "0.000123",
            "cost_nanos": 123000,
            "currency": "USD",
            "price_version": "pv_bench",
            "over_budget": False,
        }
    )


async def writer_for(path: Path) -> UsageWriter:
    url = f"sqlite+aiosqlite:///{path}"
    store = await open_store(url, migrate=True)
    await store.close()
    writer = UsageWriter(create_engine(url), usage_calls, max_backlog=10**9)
    await writer.start()
    return writer


async def drain(rows: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        w = await writer_for(Path(tmp) / "u.db")
        for i in range(rows):
            w.put(row(i))
        cpu0, t0 = time.process_time(), time.perf_counter()
        await w.flush(timeout=600)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        await w.close()
        await w.engine.dispose()
    return f"drain: {rows} rows in {wall:.2f} s = {rows / wall:,.0f} rows/s, {cpu / rows * 1e6:.1f} µs CPU per row"


async def saturated(seconds: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        w = await writer_for(Path(tmp) / "u.db")
        n = 0
        stop = time.monotonic() + seconds

        async def request() -> None:
            nonlocal n
            while time.monotonic() < stop:
                end = time.perf_counter() + 150e-6
                while time.perf_counter() < end:  # the request's own CPU
                    pass
                w.put(row(n))
                n += 1
                await asyncio.sleep(0)

        w0, t0 = w.written, time.perf_counter()
        await asyncio.gather(*(request() for _ in range(64)))
        wall = time.perf_counter() - t0
        written, backlog = w.written - w0, len(w.rows)
        await w.close()
        await w.engine.dispose()
    return (
        f"saturated loop ({seconds:.0f} s): {n / wall:,.0f} rows/s offered, {written / wall:,.0f} rows/s written, "
        f"backlog at the end {backlog:,}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    _tune_gc()
    print(await drain(args.rows))
    print(await saturated(args.seconds))


if __name__ == "__main__":
    uvloop.run(main())
