"""`serve --workers N` with every governance layer on: req/s for 1 and 2 workers (issue 17, item 4).

    .venv/bin/python bench/governance_workers.py [--seconds 6] [--rounds 3]

The all-layers configuration of bench/governance_bench.py on PostgreSQL + Redis (the workers share
budgets and rate limits through Redis), with 1 and with 2 workers, against one simulator; nothing
pinned (two workers need both cores, and the simulator and wrk share them). CPU per call is the
supervisor's and its workers' utime + stime over the c=64 run. Also checks that the same
configuration on SQLite without Redis is refused with 2 workers (each would count apart).
Loopback only; every load loop bounded in time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from gateway_bench import ENV, KEY, machine, start_sim, wrk  # noqa: E402
from governance_bench import config_for, cpu_seconds, start_gateway, stop, workspace  # noqa: E402

BIN = Path(sys.executable).parent


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (uvicorn's supervisor and its workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += cpu_seconds(int(child))
            except OSError:
                pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="write the table here too")
    args = ap.parse_args()
    from e2e.services import RedisServer
    from pg import PostgresServer

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = workspace("mh-gov-workers-")
    sim, sim_url = start_sim()
    pg, redis = PostgresServer(), RedisServer()
    env = {**ENV, "BENCH_REDIS_URL": redis.url}
    procs: dict[int, subprocess.Popen] = {}
    runs: dict[int, list[dict]] = {1: [], 2: []}
    try:
        # Without Redis, two workers would count every limit apart: serve refuses to start.
        (tmp / "sqlite.yaml").write_text(config_for("all-sqlite", sim_url, tmp, None))
        refused = subprocess.run(
            [str(BIN / "multihome"), "serve", "--config", str(tmp / "sqlite.yaml"), "--port", "1", "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused
        for n in runs:
            text = config_for("all-pg", sim_url, tmp, pg.create_database())
            procs[n] = start_gateway(f"all-pg-{n}w", text, 4960 + n, tmp, env, "--workers", str(n))
            wrk(f"http://127.0.0.1:{4960 + n}", "bench", KEY, connections=16, seconds=2, tmp=tmp)
        for _ in range(args.rounds):
            for n, proc in procs.items():
                cpu0 = tree_cpu(proc.pid)
                c64 = wrk(f"http://127.0.0.1:{4960 + n}", "bench", KEY, connections=64, seconds=args.seconds, tmp=tmp)
                cpu = tree_cpu(proc.pid) - cpu0
                runs[n].append({**c64, "cpu_us": cpu / max(c64["requests"], 1) * 1e6, "load": os.getloadavg()[0]})
                print(n, f"{c64['rps']:.0f} req/s", f"{runs[n][-1]['cpu_us']:.0f} µs", flush=True)
    finally:
        for proc in procs.values():
            stop(proc)
        stop(sim)
        redis.stop()
        pg.stop()
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.seconds} s per wrk run at c=64, "
        f"{args.rounds} interleaved rounds, nothing pinned. Machine: {machine()}.",
        "",
        "| workers | req/s at c=64, median | req/s of each round | CPU per call (all processes) | errors "
        "| load average at each round |",
        "|---|---|---|---|---|---|",
    ]
    for n, rs in runs.items():
        each = " / ".join(f"{r['rps']:,.0f}" for r in rs)
        loads = " / ".join(f"{r['load']:.1f}" for r in rs)
        lines.append(
            f"| {n} | {statistics.median(r['rps'] for r in rs):,.0f} | {each} "
            f"| {statistics.median(r['cpu_us'] for r in rs):.0f} µs | {sum(r['errors'] for r in rs)} | {loads} |"
        )
    why = refused.stderr.strip().splitlines()[-1]
    lines += ["", f"all-sqlite with --workers 2 and no Redis: refused (exit {refused.returncode}): {why}"]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
