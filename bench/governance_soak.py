"""Sustained load on the governed gateway: does it refuse, does its memory grow, is every answered
call written after SIGTERM?

    .venv/bin/python bench/governance_soak.py [--config all-sqlite|all-pg] [--seconds 1800] [--connections 32]
        [--chart bench/soak_rss_all-sqlite.svg]

One `multihome serve` (a configuration of bench/governance_bench.py) against the simulator, `wrk`
for `--seconds`, the gateway's RSS sampled every 10 s. Then SIGTERM, and once the process has
exited: the usage rows and audit `call` events on disk against the calls wrk got answers for
(rows can exceed answers: calls wrk abandoned when it stopped are recorded too). `all-pg` starts a
real PostgreSQL and Redis as the tests do. `--chart` draws the RSS samples and their anonymous part
(the heap; the rest is mapped files) as SVG. Loopback only; bounded by `--seconds`.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_bench import ENV, KEY, ROOT, start_sim  # noqa: E402
from governance_bench import config_for, rss_mb, slug, start_gateway, stop, workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="all-sqlite", choices=["+metering", "all-sqlite", "all-pg"])
    ap.add_argument("--seconds", type=int, default=1800)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--chart", type=Path, help="write the RSS over time here (SVG)")
    args = ap.parse_args()
    tmp = workspace("mh-soak-")
    body = tmp / "body.json"
    body.write_text(json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hello"}]}))
    sim, sim_url = start_sim()
    env, pg_url, servers = dict(ENV), None, []
    if args.config == "all-pg":
        from e2e.services import RedisServer
        from pg import PostgresServer

        servers = [PostgresServer(), RedisServer()]
        pg_url = servers[0].create_database()
        env["BENCH_REDIS_URL"] = servers[1].url
    gw = start_gateway(args.config, config_for(args.config, sim_url, tmp, pg_url), 4980, tmp, env)
    rss: list[tuple[float, float, float]] = []  # (s, RSS MB, of it anonymous MB)
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(10):
            rss.append((time.monotonic() - t0, rss_mb(gw.pid), anon_mb(gw.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", str(ROOT / "bench/post.lua")]
            + ["http://127.0.0.1:4980/v1/chat/completions"],
            env={**ENV, "WRK_BODY": str(body), "WRK_KEY": KEY},
            capture_output=True,
            text=True,
            check=True,
            timeout=args.seconds + 60,
        ).stdout
        done.set()
        t_stop = time.monotonic()
        stop(gw)
        stopped_s = time.monotonic() - t_stop
    finally:
        done.set()
        stop(gw)
        stop(sim)
    try:
        rows, ok_rows = count_usage(tmp, args.config, pg_url)
    finally:
        for server in servers:
            server.stop()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = int(non2xx.group(1)) if non2xx else 0
    chains = (tmp / f"audit-{slug(args.config)}").glob("chn_*.jsonl")
    calls = sum(f.read_bytes().count(b'"kind":"call"') for f in chains)
    log = (tmp / f"{slug(args.config)}.log").read_text()
    lost = re.findall(r"usage writer closed with .*", log)
    print(
        f"{args.config}, wrk c={args.connections} for {args.seconds} s: {requests} answers ({requests / args.seconds:,.0f}/s), {refused} non-2xx"
    )
    print(
        f"after SIGTERM (exited in {stopped_s:.1f} s): {rows} usage rows ({ok_rows} with status 200), {calls} audit call events"
    )
    print(f"every answer has its usage row: {ok_rows >= requests - refused}; writer gave up: {lost or 'no'}")
    print("RSS (s, MB): " + ", ".join(f"{t:.0f}:{m:.0f}" for t, m, _ in rss))
    print("of it anonymous (s, MB): " + ", ".join(f"{t:.0f}:{a:.0f}" for t, _, a in rss))
    if args.chart:
        draw_rss(rss, args.chart, f"{args.config}, wrk c={args.connections}: {requests / args.seconds:,.0f} calls/s")


def anon_mb(pid: int) -> float:
    """The anonymous part of the RSS (the heap; the rest is mapped files: libraries, the usage spool)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


COUNTS = "SELECT count(*), count(*) FILTER (WHERE status = 200) FROM usage_calls"


def count_usage(tmp: Path, config: str, pg_url: str | None) -> tuple[int, int]:
    """(usage rows, rows of answered calls) in the configuration's store, after the gateway exited."""
    if pg_url is None:
        with sqlite3.connect(tmp / f"{slug(config)}.db") as db:
            return db.execute(COUNTS).fetchone()
    import asyncio

    import asyncpg

    async def count() -> tuple[int, int]:
        conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
        try:
            return tuple(await conn.fetchrow(COUNTS))
        finally:
            await conn.close()

    return asyncio.run(count())


def draw_rss(rss: list[tuple[float, float, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot([t / 60 for t, _, _ in rss], [m for _, m, _ in rss], color="#1f77b4", label="RSS")
    ax.plot([t / 60 for t, _, _ in rss], [a for _, _, a in rss], color="#ff7f0e", label="of it anonymous (heap)")
    ax.legend(loc="lower right")
    ax.set_xlabel("minutes")
    ax.set_ylabel("gateway RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
