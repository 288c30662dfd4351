"""The usage writer on PostgreSQL, one batch at a time: the event loop's CPU in each step of the writer's
task (each stretch of code between two awaits, which holds the loop), by where it resumed and where it
suspended, medians over many batches; and the writer's CPU per batch in all. On asyncio's own loop,
every callback it runs timed with the thread's CPU clock (not wall time: the machine is shared).

    PYTHONPATH=src:tests python bench/pg_writer_steps.py [--rows 75] [--batches 300] [--src TREE/src ...]

`--rows`: rows per batch (wrk -c1 at ~1,500 calls/s with the 50 ms flush interval: ~75). A throwaway
PostgreSQL (tests/pg.py), a fresh database per tree.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def _steps(batches: int, rows: int, url: str, opcodes: bool = False, uv: bool = False) -> dict:
    from loop_stalls import _where  # bench/
    from metering.conftest import call  # tests/
    from multihome.config.metering import MeteringConfig, WriterConfig
    from multihome.metering.prices import DeploymentPrice, PriceTable
    from multihome.metering.service import Metering
    from multihome.storage import open_store

    steps: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    run = asyncio.events.Handle._run

    def timed(self: Any) -> None:
        task = getattr(self._callback, "__self__", None)
        if not (isinstance(task, asyncio.Task) and "UsageWriter" in repr(task.get_coro())):
            run(self)
            return
        before = _where(task)
        t0 = time.thread_time()
        run(self)
        took = time.thread_time() - t0
        steps[(before, "done" if task.done() else _where(task))].append(took)

    ops: collections.Counter = collections.Counter()
    total: list[float] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            ops[frame.f_code.co_filename.rsplit("/", 2)[-1] + ":" + frame.f_code.co_name] += 1
        return tracer

    async def main() -> None:
        store = await open_store(url, migrate=True)
        await store.close()
        prices = PriceTable({"dep-a": DeploymentPrice.of("2.5", "10", None, "USD")})
        m = Metering(MeteringConfig(writer=WriterConfig(flush_interval_ms=5)), prices, storage_url=url)
        await m.start()
        for b in range(20):  # warm: the statement prepared, the pool's connection made
            for i in range(rows):
                m.record(call(f"w{b}-{i}"))
            await m.flush()
        made = [[call(f"r{b}-{i}") for i in range(rows)] for b in range(batches)]
        cpu0 = time.thread_time()
        if opcodes:
            sys.settrace(tracer)
        elif not uv:
            asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        for b in range(batches):
            for c in made[b]:
                m.record(c)
            await asyncio.sleep(0.01)  # the writer gathers for its interval (5 ms), then writes them
            await m.flush()
        sys.settrace(None)
        asyncio.events.Handle._run = run  # type: ignore[method-assign]
        total.append(time.thread_time() - cpu0)
        await m.close()

    if uv:
        import uvloop

        uvloop.run(main())
        return {"loop_cpu_per_batch_ms": total[0] / max(1, batches) * 1e3}
    asyncio.run(main())
    if opcodes:
        top = [[k, v / batches] for k, v in ops.most_common(25)]
        return {"opcodes": sum(ops.values()) / batches, "top": top}
    out = []
    for (before, after), v in steps.items():
        v.sort()
        out.append([before, after, len(v) / batches, v[len(v) // 2] * 1e3, v[int(len(v) * 0.9)] * 1e3, sum(v)])
    return {"steps": sorted(out, key=lambda r: -r[5]), "per_batch_ms": sum(r[5] for r in out) / batches * 1e3}


def _callgrind(src: str, batches: int, rows: int, url: str) -> int:
    """Instructions of a child that writes `batches` batches on uvloop (records and start-up included)."""
    sys.path.insert(0, HERE)
    from percall_instructions import callgrind

    tests = os.path.join(HERE, "..", "tests")
    args = ["--uvloop", "--rows", str(rows), "--batches", str(batches), "--child", url]
    return callgrind(os.pathsep.join([src, tests]), __file__, args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=75)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--src", action="append", default=[])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--opcodes", action="store_true", help="Python opcodes per batch (all of the loop thread's)")
    ap.add_argument(
        "--uvloop", action="store_true", help="on uvloop: the loop thread's CPU per batch (records included)"
    )
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="valgrind instructions per batch of the writer's process on uvloop (--batches N less 0 batches)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
        print(json.dumps(_steps(args.batches, args.rows, args.child, args.opcodes, args.uvloop)))
        return
    sys.path[:0] = [os.path.join(HERE, "..", "tests")]
    from pg import PostgresServer

    pg = PostgresServer()
    try:
        for r in range(args.rounds):
            for src in args.src or [os.path.abspath("src")]:
                if args.instructions:
                    counts = [_callgrind(src, n, args.rows, pg.create_database()) for n in (0, args.batches)]
                    per = (counts[1] - counts[0]) / args.batches
                    print(f"[{r}] {src}: {args.rows} rows a batch, uvloop, {per:,.0f} instructions per batch")
                    continue
                cmd = [sys.executable, __file__, "--rows", str(args.rows), "--batches", str(args.batches)]
                cmd += ["--opcodes"] if args.opcodes else []
                cmd += ["--uvloop"] if args.uvloop else []
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.path.join(HERE, "..", "tests")]))
                res = subprocess.run(
                    cmd + ["--child", pg.create_database()], env=env, capture_output=True, text=True, timeout=600
                )
                if res.returncode:
                    raise SystemExit(res.stderr[-3000:])
                out = json.loads(res.stdout.strip().splitlines()[-1])
                if args.uvloop:
                    ms = out["loop_cpu_per_batch_ms"]
                    print(f"[{r}] {src}: {args.rows} rows a batch, uvloop, the loop thread's CPU per batch {ms:.3f} ms")
                    continue
                if args.opcodes:
                    print(f"[{r}] {src}: {args.rows} rows a batch, {out['opcodes']:,.0f} Python opcodes per batch")
                    for name, n in out["top"]:
                        print(f"   {n:9.1f}  {name}")
                    continue
                print(f"[{r}] {src}: {args.rows} rows a batch, the writer's CPU per batch {out['per_batch_ms']:.3f} ms")
                for before, after, n, med, p90, _ in out["steps"]:
                    print(f"   {n:4.1f}/batch  median {med:.3f}  p90 {p90:.3f} ms   {before} -> {after}")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
