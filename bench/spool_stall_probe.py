"""The usage spool's append latency while another thread writes and fsyncs a file on the same
filesystem (the audit writer's pattern): p50, p99, p99.9, max and the time spent in appends over 1 ms.
A copy into the mapped spool can fault a page in with the interpreter held (on ext4 the first write
to a page may wait for the journal that fsyncs commit); a write() waited without it.

    PYTHONPATH=src python bench/spool_stall_probe.py [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multihome.metering.spool import UsageSpool
from usage_spool_bench import row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp", help="a directory on the filesystem to probe")
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args()
    rows = [row(i) for i in range(args.rows)]
    stop = threading.Event()
    d = tempfile.mkdtemp(dir=args.dir)

    def syncer() -> None:
        fd = os.open(os.path.join(d, "audit.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        while not stop.is_set():
            os.write(fd, b"x" * 2000)
            os.fsync(fd)
        os.close(fd)

    t = threading.Thread(target=syncer, daemon=True)
    t.start()
    spool = UsageSpool(d, "db")
    spool.open()
    lat = []
    for i, r in enumerate(rows):
        t0 = time.perf_counter_ns()
        spool.append(r)
        lat.append(time.perf_counter_ns() - t0)
        if i % 500 == 499:
            spool.committed(500)
    stop.set()
    t.join()
    spool.committed(len(rows) % 500)
    asyncio.run(spool.close())
    os.unlink(os.path.join(d, "audit.log"))
    os.rmdir(d)
    lat.sort()
    n = len(lat)
    print(
        f"p50 {lat[n // 2] / 1000:.1f} µs, p99 {lat[int(n * 0.99)] / 1000:.1f} µs, "
        f"p99.9 {lat[int(n * 0.999)] / 1000:.1f} µs, max {lat[-1] / 1000:.1f} µs, "
        f"in appends over 1 ms: {sum(x for x in lat if x > 1e6) / 1e6:.1f} ms"
    )


if __name__ == "__main__":
    main()
