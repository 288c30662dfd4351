"""Instructions per call of the metering work on the event loop's thread, counted by valgrind's
callgrind: deterministic, so a change of a few hundred instructions shows on a loaded, shared machine
where timings cannot. Each case runs the real objects for N calls and for 0 calls in fresh
processes; the difference divided by N is the per-call count (start-up cancels). `--base-src`
counts the same cases with another tree (main checked out elsewhere), interleaved.

Cases:
  spool   `UsageSpool.append` of a usage row, `committed(50)` after every 50 rows, as the writer does
          (user-space instructions only: the kernel's side of a write() or of a page fault is not
          counted; see "thread CPU" below for that)
  price   a call's cost, its text and nano-units (before: the Decimal cost, `to_nanos`, `text`)
  price+decimal  the same and the cost as a Decimal (made now only when a contract agreement
          matches the call: MeteredCall.cost)
  record  `Limiter.admit` + `Metering.record` with the issue's config (one key budget, one key
          rate limit), the usage row put on a writer with a spool (not started: no commits but the
          `committed(50)` above), as the gateway's event loop runs them per call

`--thread-cpu` also times the spool case in process (time.thread_time_ns: user + system time of the
thread, so the write() system call counts), alone and with a busy Python thread beside it (the
audit and usage writers of a loaded gateway), where each write() gives the interpreter away.

    PYTHONPATH=src python bench/percall_instructions.py [--calls 2000] [--base-src /tmp/main/src] [--thread-cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

from usage_spool_bench import row  # the same usage row (bench/ is on the path when run as a script)

CASES = ("spool", "price", "price+decimal", "record")


def _usages(n: int):
    from multihome.accounting.record import Usage

    rnd = random.Random(17)
    return [Usage(prompt_tokens=rnd.randrange(1, 20_000), completion_tokens=rnd.randrange(1, 4_000)) for _ in range(n)]


WARM = 300  # calls run before the counted ones in both runs (caches filled, first file made)


async def _run(case: str, calls: int, total: int, directory: str) -> None:
    """Set up for WARM + `total` calls (the same work whatever `calls` is), run WARM, then `calls` more."""
    total += WARM
    calls += WARM
    if case == "spool":
        from multihome.metering.spool import UsageSpool

        rows = [row(i) for i in range(total)]
        spool = UsageSpool(directory, "bench")
        spool.open()
        for i in range(calls):
            spool.append(rows[i])
            if i % 50 == 49:
                spool.committed(50)
        return
    from multihome.metering.prices import DeploymentPrice, text, to_nanos

    price = DeploymentPrice.of(2.5, 10.0, 1.25, "USD")
    usages = _usages(total)
    if case in ("price", "price+decimal"):
        if hasattr(price, "charge"):
            with_decimal = case == "price+decimal"
            for u in usages[:calls]:
                units, _, _ = price.charge(u)
                if with_decimal:
                    price.decimal(u, units)
        else:
            for u in usages[:calls]:
                cost = price.cost(u)
                to_nanos(cost)
                text(cost)
        return
    from multihome.accounting.record import CallRecord
    from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
    from multihome.metering.prices import PriceTable
    from multihome.metering.service import Metering
    from multihome.metering.spool import UsageSpool
    from multihome.metering.tables import usage_calls
    from multihome.metering.writer import UsageWriter
    from multihome.schema.principal import Principal
    from multihome.storage.engine import create_engine

    cfg = MeteringConfig(
        budgets=[BudgetRule(scope="key", id="*", amount=1_000_000, period="day", mode="hard")],
        rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=10**8, tokens_per_minute=10**10)],
    )
    m = Metering(cfg, PriceTable({"dep-a": price}))
    await m.limiter.start()
    spool = UsageSpool(directory, "bench")
    spool.open()
    m.writer = writer = UsageWriter(create_engine(f"sqlite+aiosqlite:///{directory}/u.db"), usage_calls, spool=spool)
    m.limiter.overloaded = writer.overloaded
    who = Principal(tenant="ten_a", subject="key_a", source="api_key", key_id="key_a")

    class Dep:
        name = "dep-a"
        max_output_tokens = None

    deps = [Dep()]
    t0 = 1_764_763_200.0
    records = [
        CallRecord(
            request_id=f"req{i}",
            started_at=t0,
            finished_at=t0 + 0.25,
            endpoint="chat",
            tenant="ten_a",
            subject="key_a",
            principal_source="api_key",
            team=None,
            key_id="key_a",
            model_group="g",
            deployment="dep-a",
            provider="prov",
            status=200,
            outcome="ok",
            usage=u,
            latency_ms=250.0,
        )
        for i, u in enumerate(usages)
    ]
    for i in range(calls):
        rec = records[i]
        await m.limiter.admit(who, "g", deps, rec.usage.prompt_tokens, 512, rec.request_id)
        m.record(rec)
        if i % 50 == 49:
            for _ in range(50):
                writer.rows.popleft()
            spool.committed(50)
    await m.limiter.close()


def callgrind(src: str, script: str, args: list[str], out: str | None = None, options: tuple[str, ...] = ()) -> int:
    """Instructions callgrind collected over `script args` run with `src` as the package (`out`: where to
    leave its output; a temporary file if None; `options`: callgrind's own, e.g. --toggle-collect)."""
    env = dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory() as d:
        dump = out or f"{d}/cg.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", *options, f"--callgrind-out-file={dump}", sys.executable, script, *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    return int(found.group(1))


def _instructions(src: str, case: str, calls: int, total: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        return callgrind(src, __file__, ["--child", case, str(calls), str(total), d])


def _busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def _switches() -> int:
    """Context switches of this thread so far (voluntary + involuntary), from /proc."""
    with open("/proc/thread-self/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)


def _thread_cpu(rows: list[dict], busy: bool) -> tuple[float, float, float]:
    """(thread CPU µs per row, wall µs per row, context switches per 1,000 rows) of appending `rows`
    on this thread."""
    from multihome.metering.spool import UsageSpool

    stop = threading.Event()
    other = threading.Thread(target=_busy, args=(stop,), daemon=True) if busy else None
    with tempfile.TemporaryDirectory() as d:
        spool = UsageSpool(d, "bench")
        spool.open()
        if other is not None:
            other.start()
            time.sleep(0.05)
        s0, c0, w0 = _switches(), time.thread_time_ns(), time.perf_counter_ns()
        for i, r in enumerate(rows):
            spool.append(r)
            if i % 50 == 49:
                spool.committed(50)
        c1, w1, s1 = time.thread_time_ns(), time.perf_counter_ns(), _switches()
        stop.set()
        if other is not None:
            other.join()
        asyncio.run(spool.close())
    return (c1 - c0) / len(rows) / 1000, (w1 - w0) / len(rows) / 1000, (s1 - s0) / len(rows) * 1000


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        case, calls, total, d = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        asyncio.run(_run(case, calls, total, d))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--base-src", default=None, help="another tree's src/ to count the same cases with")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--thread-cpu", action="store_true")
    args = ap.parse_args()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    trees = [("this tree", os.path.abspath(here))] + ([("base", args.base_src)] if args.base_src else [])
    print(f"| case | {' | '.join(name for name, _ in trees)} | (instructions per call, {args.calls} calls vs 0) |")
    print("|---|" + "---|" * len(trees) + "---|")
    for case in filter(None, args.cases.split(",")):
        counts = []
        for _, src in trees:
            n = _instructions(src, case, args.calls, args.calls)
            z = _instructions(src, case, 0, args.calls)
            counts.append((n - z) / args.calls)
        change = f"{(counts[0] / counts[1] - 1) * 100:+.0f} %" if len(counts) > 1 and counts[1] else ""
        print(f"| {case} | {' | '.join(f'{c:,.0f}' for c in counts)} | {change} |")
    if args.thread_cpu:
        rows = [row(i) for i in range(20_000)]
        print()
        print(
            "| spool, in process (this interpreter's tree) | thread CPU µs per row | wall µs per row | "
            "context switches per 1,000 rows |"
        )
        print("|---|---|---|---|")
        for busy in (False, True):
            cpu, wall, sw = min((_thread_cpu(rows, busy) for _ in range(5)), key=lambda t: t[1])
            print(f"| {'with a busy thread beside it' if busy else 'alone'} | {cpu:.2f} | {wall:.2f} | {sw:.1f} |")


if __name__ == "__main__":
    main()
