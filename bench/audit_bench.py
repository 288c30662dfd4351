"""Audit writer cost at a steady call rate: event-loop-thread CPU per call vs writer-thread CPU.

Each simulated call does what the front door does: `call_started` (awaited, durable) and, when it
finishes, `record(call)`. That is two events per call. The loop-thread share is the loop thread's
CPU time with audit minus the same paced run without audit, per call; the writer share is the
writer thread's own CPU clock.

    .venv/bin/python bench/audit_bench.py [--rate 4000] [--seconds 5] [--no-fsync]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from audit.helpers import call
from multihome.audit import AuditLog
from multihome.config.audit import AuditConfig
from multihome.schema.principal import Principal

PRINCIPAL = Principal(tenant="ten_a", subject="key_abc", source="api_key", team="t", key_id="key_abc")


async def run(rate: int, seconds: float, log: AuditLog | None) -> dict:
    records = [call(i) for i in range(1000)]
    tick = 0.001
    waits: list[float] = []
    tasks: set = set()

    async def one(rec):
        t0 = time.perf_counter()
        await log.call_started(rec.request_id, PRINCIPAL, rec.model_group, rec.endpoint, rec.request_sha256)
        waits.append(time.perf_counter() - t0)
        log.record(rec)

    cpu0, t0 = time.thread_time(), time.perf_counter()
    sent, n = 0, 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        owed = int(rate * elapsed) - sent  # paced by the clock, not by how long sleep() really took
        for _ in range(owed):
            n += 1
            if log is not None:
                task = asyncio.ensure_future(one(records[n % 1000]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                task = asyncio.ensure_future(asyncio.sleep(0))  # the same task churn, without audit
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(tick)
    if tasks:
        await asyncio.gather(*tasks)
    return {"calls": sent, "loop_cpu": time.thread_time() - cpu0, "wall": time.perf_counter() - t0, "waits": waits}


async def main(args) -> None:
    base = await run(args.rate, args.seconds, None)
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(AuditConfig(dir=tmp, fsync=not args.no_fsync))
        await log.start()
        clock = time.pthread_getcpuclockid(log._thread.ident)
        w0 = time.clock_gettime(clock)
        out = await run(args.rate, args.seconds, log)
        writer_cpu = time.clock_gettime(clock) - w0
        batches, written = log.batches, log.written
        await log.close()
    calls = out["calls"]
    loop_us = (out["loop_cpu"] - base["loop_cpu"] * calls / max(base["calls"], 1)) / calls * 1e6
    waits = sorted(out["waits"])
    print(
        f"rate {args.rate} calls/s for {args.seconds}s, fsync={'off' if args.no_fsync else 'on'} "
        f"({calls} calls, {written} events, python {sys.version.split()[0]})"
    )
    print(
        f"  loop thread:   {loop_us:7.1f} us CPU per call (call_started + record), "
        f"baseline {base['loop_cpu'] / max(base['calls'], 1) * 1e6:.1f} us per paced task"
    )
    print(
        f"  writer thread: {writer_cpu / calls * 1e6:7.1f} us CPU per call ({writer_cpu / written * 1e6:.1f} per event)"
    )
    print(f"  group commit:  {batches} fsync'd batches, {written / max(batches, 1):.1f} events per batch")
    print(
        f"  call_started durable after: p50 {statistics.median(waits) * 1e3:.2f} ms, "
        f"p99 {waits[int(len(waits) * 0.99)] * 1e3:.2f} ms, max {waits[-1] * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args))
