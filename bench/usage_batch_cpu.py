"""CPU of the usage writer's SQLite batch on its own thread, per row, for batches of given sizes: the tree on
PYTHONPATH's `UsageWriter._sqlite_batch` called directly (no event loop, no hand-offs) on a migrated SQLite file,
WAL and synchronous=FULL as the gateway opens it. A/B two trees by running it with each one's src on PYTHONPATH,
interleaved; under callgrind its counts are steadier than its times on a shared machine.

    PYTHONPATH=src:tests .venv/bin/python bench/usage_batch_cpu.py [--sizes 40,70,135] [--rows 30000]

A gateway at R calls/s with the default 50 ms flush interval writes batches of about R / 20 rows (plus what
arrives while one is written).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from multihome.api.gateway import _tune_gc
from multihome.metering.tables import usage_calls
from multihome.metering.writer import UsageWriter
from multihome.storage import open_store
from multihome.storage.engine import create_engine
from usage_writer_bench import row


async def measure(sizes: list[int], rows: int) -> str:
    _tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/u.db"
        await (await open_store(url, migrate=True)).close()
        engine = create_engine(url)
        writer = UsageWriter(engine, usage_calls)
        out = []
        template = row(0)
        for n in sizes:
            batches = [[(f"req_{n}_{b * n + i:012d}", *template[1:]) for i in range(n)] for b in range(rows // n)]
            times = []
            for batch in batches:
                t0 = time.thread_time()
                writer._sqlite_batch(engine, batch)
                times.append(time.thread_time() - t0)
            per_row = sum(times) / (len(batches) * n) * 1e6
            out.append(f"n={n}: {per_row:.2f} µs/row (median batch {statistics.median(times) / n * 1e6:.2f})")
        writer._drop_connection()
        await engine.dispose()
    return " | ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="40,70,135")
    ap.add_argument("--rows", type=int, default=30_000)
    args = ap.parse_args()
    print(asyncio.run(measure([int(x) for x in args.sizes.split(",")], args.rows)))


if __name__ == "__main__":
    main()
