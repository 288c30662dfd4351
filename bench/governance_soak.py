"""Sustained load on the governed gateway: does it refuse, does its memory grow, is every answered
call written after SIGTERM?

    .venv/bin/python bench/governance_soak.py [--config all-sqlite] [--seconds 1800] [--connections 32]

One `multihome serve` (a configuration of bench/governance_bench.py) against the simulator, `wrk`
for `--seconds`, the gateway's RSS sampled every 10 s. Then SIGTERM, and once the process has
exited: the usage rows and audit `call` events on disk against the calls wrk got answers for
(rows can exceed answers: calls wrk abandoned when it stopped are recorded too). Loopback only;
bounded by `--seconds`.
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
    ap.add_argument("--config", default="all-sqlite", choices=["+metering", "all-sqlite"])
    ap.add_argument("--seconds", type=int, default=1800)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    tmp = workspace("mh-soak-")
    body = tmp / "body.json"
    body.write_text(json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hello"}]}))
    sim, sim_url = start_sim()
    gw = start_gateway(args.config, config_for(args.config, sim_url, tmp, None), 4980, tmp, dict(ENV))
    rss: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(10):
            rss.append((time.monotonic() - t0, rss_mb(gw.pid)))

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
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = int(non2xx.group(1)) if non2xx else 0
    db = sqlite3.connect(tmp / f"{slug(args.config)}.db")
    rows = db.execute("SELECT count(*) FROM usage_calls").fetchone()[0]
    ok_rows = db.execute("SELECT count(*) FROM usage_calls WHERE status = 200").fetchone()[0]
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
    print("RSS (s, MB): " + ", ".join(f"{t:.0f}:{m:.0f}" for t, m in rss))


if __name__ == "__main__":
    main()
