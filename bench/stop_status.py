"""How `multihome serve` ends on SIGTERM after real upstream work, run after run (a Rust HTTP client's
native threads have been seen to abort the interpreter at exit).

    PYTHONPATH=src:tests python bench/stop_status.py [--runs 40] [--minutes 20] [--signal TERM|INT] [--workers N]

Each run: a fresh gateway (plain config) in front of one openai simulator; unary calls, streams read
to their end, a unary call and a stream cancelled before their head (the client leaves), a stream
left after its head; then SIGTERM (or SIGINT) and the exit status. A clean stop ends by SIGTERM (-15):
uvicorn re-raises the signal once its shutdown is done (main on aiohttp does the same); by SIGINT, 0.
-6 is SIGABRT. Bounded in runs and in time; loopback only. Prints a tally and the output tail of every
other ending, and whether each run's log has its last call's access-log line.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_bench import ENV, KEY, start_sim  # noqa: E402
from governance_bench import wait_ready  # noqa: E402

BIN = Path(sys.executable).parent
# SIGTERM: uvicorn re-raises it once its shutdown is done (as on main); SIGINT: `serve` returns 0.
CLEAN = {-signal.SIGTERM, 0}

CONFIG = """
server: {{api_keys_env: [BENCH_CLIENT_KEY]}}
providers:
  sim: {{kind: openai, endpoint: "{sim}/v1", auth: {{api_key_env: BENCH_SIM_KEY}}, max_connections: 8}}
deployments:
  fast@sim: {{provider: sim, model: fast-model}}
  slow@sim: {{provider: sim, model: slow-model}}
  drip@sim: {{provider: sim, model: drip-model}}
model_groups:
  fast: {{deployments: [fast@sim]}}
  slow: {{deployments: [slow@sim]}}
  drip: {{deployments: [drip@sim]}}
"""


CALLS = 8  # calls() makes this many; each has its access-log line


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(model: str, stream: bool) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream}


def calls(url: str) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        for _ in range(3):
            http.post("/v1/chat/completions", json=_body("fast", False)).raise_for_status()
        for _ in range(2):
            with http.stream("POST", "/v1/chat/completions", json=_body("fast", True)) as r:
                r.raise_for_status()
                r.read()
        with http.stream("POST", "/v1/chat/completions", json=_body("drip", True)) as r:  # left after its head
            next(r.iter_bytes())
    # Cancelled before their head: the client gives up while the upstream waits (its latency fault).
    with httpx.Client(base_url=url, headers=headers, timeout=0.3) as http:
        for stream in (False, True):
            try:
                http.post("/v1/chat/completions", json=_body("slow", stream))
            except httpx.TimeoutException:
                pass


def one_run(sim_url: str, tmp: Path, env: dict[str, str], sig: signal.Signals, workers: int) -> tuple[int, str]:
    port = _port()
    path = tmp / "plain.yaml"
    path.write_text(CONFIG.format(sim=sim_url))
    log = tmp / f"gateway-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "multihome"), "serve", "--config", str(path), "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc, seconds=60)
        calls(f"http://127.0.0.1:{port}")
        proc.send_signal(sig)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text(errors="replace")
    log.unlink()
    return code, text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--signal", default="TERM", choices=["TERM", "INT"])
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    sig = signal.Signals[f"SIG{args.signal}"]
    env = {**ENV, "RUST_BACKTRACE": "1"}
    sim, sim_url = start_sim()
    tally: collections.Counter[int] = collections.Counter()
    short = 0  # runs whose log lacks a call's access-log line
    deadline = time.monotonic() + args.minutes * 60
    try:
        with httpx.Client(base_url=sim_url, timeout=5) as admin:
            admin.post("/_sim/faults", json={"match": "slow-model", "latency_ms": 1500}).raise_for_status()
            admin.post("/_sim/faults", json={"match": "drip-model", "chunk_delay_ms": 200}).raise_for_status()
        with tempfile.TemporaryDirectory(prefix="mh-stop-") as tmp:
            for i in range(args.runs):
                if time.monotonic() > deadline:
                    print(f"time is up after {i} runs")
                    break
                code, text = one_run(sim_url, Path(tmp), env, sig, args.workers)
                tally[code] += 1
                lines = text.count(" multihome.access: ")
                if lines != CALLS:
                    short += 1
                    print(f"run {i + 1}: {lines} access-log lines of {CALLS} calls", flush=True)
                if code not in CLEAN:
                    name = signal.Signals(-code).name if code < 0 else f"exit {code}"
                    print(f"run {i + 1}: {name}\n{text[-3000:]}\n---", flush=True)
    finally:
        sim.terminate()
        sim.wait(10)
    runs = sum(tally.values())
    statuses = ", ".join(f"status {k}: {v}" for k, v in sorted(tally.items()))
    print(
        f"{runs} runs by SIG{args.signal}, {args.workers} worker(s) (load {os.getloadavg()[0]:.1f}): {statuses}; "
        f"{short} without every access-log line"
    )


if __name__ == "__main__":
    main()
