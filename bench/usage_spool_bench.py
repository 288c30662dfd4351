"""What the usage spool adds to each call: `UsageSpool.append` (one JSON line copied into the file's
shared mapping, no system call, no fsync) on the event loop, with rows committed in batches as the writer does, against the same row put on an
in-memory queue only. Prints a markdown table: µs per row, median of 5 rounds.

    PYTHONPATH=src python bench/usage_spool_bench.py [--rows 20000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from collections import deque

try:  # rows as tuples in column order since metering/row.py; a tree of before (--base-src) takes dicts
    from multihome.metering.row import as_row
except ImportError:
    as_row = lambda fields: fields
from multihome.metering.spool import UsageSpool


def row(i: int):
    now = dt.datetime.now(dt.UTC)
    return as_row(
        {
            "request_id": f"req_{i:024x}",
            "started_at": now,
            "finished_at": now,
            "tenant_id": "ten_0123456789abcdef",
            "team_id": None,
            "key_id": "key_0123456789abcdef",
            "endpoint": "chat",
            "model_group": "gpt-4o",
            "deployment": "gpt-4o@azure",
            "provider": "azure",
            "status": 200,
            "outcome": "ok",
            "prompt_tokens": 25,
            "completion_tokens": 80,
            "cached_tokens": 0,
            "estimated": False,
            "latency_ms": 412.5,
            "cost": "0.000862500",
            "cost_nanos": 862500,
            "currency": "USD",
            "price_version": "pv_0123456789abcdef",
            "over_budget": False,
        }
    )


async def one_round(directory: str, rows: list[dict], spool_on: bool, batch: int) -> float:
    spool = UsageSpool(directory, "bench") if spool_on else None
    if spool is not None:
        spool.open()
    queue: deque[dict] = deque()
    t0 = time.perf_counter()
    for i, r in enumerate(rows, 1):
        if spool is not None:
            spool.append(r)
        queue.append(r)
        if i % batch == 0:  # what the writer does after each committed batch
            for _ in range(batch):
                queue.popleft()
            if spool is not None:
                spool.committed(batch)
    took = time.perf_counter() - t0
    if spool is not None:
        spool.committed(len(queue))
        await spool.close()
    return took / len(rows) * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=50, help="rows per committed batch")
    ap.add_argument("--dir", default=None, help="where the spool files go (default: a temporary directory)")
    args = ap.parse_args()
    rows = [row(i) for i in range(args.rows)]
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        base, spooled = [], []
        for _ in range(5):
            base.append(await one_round(d, rows, False, args.batch))
            spooled.append(await one_round(d, rows, True, args.batch))
    b, s = statistics.median(base), statistics.median(spooled)
    print("| usage row, per call | µs (median of 5 rounds) |")
    print("|---|---|")
    print(f"| queued in memory only | {b:.2f} |")
    print(f"| + spooled (encode + copy, batch of {args.batch} committed) | {s:.2f} |")
    print(f"| spool's cost | {s - b:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
