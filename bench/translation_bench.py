"""Added per-call cost of a translating provider path, in one run through one gateway process.

The same non-streaming chat call is served by the OpenAI simulator (pass-through path) and by the
Bedrock simulator (translate to Converse + botocore SigV4 + translate back). The difference is what
the Bedrock path costs the gateway. The Bedrock simulator runs without a key pair so it does not
spend its own time verifying signatures (the gateway still signs every call).

Two measures, rounds interleaved so both paths see the same machine state:
- latency: sequential calls (concurrency 1), median per path, difference of medians;
- CPU per call: a bounded burst at concurrency 16, gateway CPU time (from /proc) / calls.

Prints a markdown snippet. Bounded in count and time; loopback only.
    python bench/translation_bench.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BIN = Path(sys.executable).parent
KEY = "bench-client-key"
BODY = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise the benefits of multi-cloud AI in one line."},
    ],
    "max_tokens": 200,
    "temperature": 0.2,
}
PATHS = {"openai": "bench-openai", "bedrock": "bench-bedrock"}

CONFIG = """
server: {{api_keys_env: [BENCH_CLIENT_KEY]}}
providers:
  oai: {{kind: openai, endpoint: "{openai}/v1", max_connections: 512}}
  br: {{kind: bedrock, endpoint: "{bedrock}", region: us-east-1, max_connections: 512}}
deployments:
  d-openai: {{provider: oai, model: gpt-4o-mini}}
  d-bedrock: {{provider: br, model: "us.anthropic.claude-3-5-haiku-20241022-v1:0"}}
model_groups:
  bench-openai: {{deployments: [d-openai], retries: 0}}
  bench-bedrock: {{deployments: [d-bedrock], retries: 0}}
"""


def start_sim(kind: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "multihome.simulators", "--kind", kind, "--name", f"{kind}-bench", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = p.stdout.readline()
    if not line.startswith("READY "):
        raise RuntimeError(f"{kind} simulator did not start")
    return p, line.split()[1]


def start_gateway(openai_url: str, bedrock_url: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp / "gw.yaml"
    cfg.write_text(CONFIG.format(openai=openai_url, bedrock=bedrock_url))
    env = {
        **os.environ,
        "BENCH_CLIENT_KEY": KEY,
        "AWS_ACCESS_KEY_ID": "AKIDBENCH",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_CONFIG_FILE": str(tmp / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    p = subprocess.Popen(
        [str(BIN / "multihome"), "serve", "--config", str(cfg), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return p, f"http://127.0.0.1:{port}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):  # bounded: 10 s
        try:
            async with session.get(url + "/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("gateway did not become ready")


async def call(session: aiohttp.ClientSession, url: str, group: str) -> float:
    t0 = time.perf_counter()
    async with session.post(
        url + "/v1/chat/completions", json={"model": group, **BODY}, headers={"authorization": f"Bearer {KEY}"}
    ) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{group}: HTTP {r.status}")
    return time.perf_counter() - t0


async def sequential(session, url: str, group: str, n: int) -> list[float]:
    return [await call(session, url, group) for _ in range(n)]


async def burst(session, url: str, group: str, n: int, gw_pid: int, concurrency: int = 16) -> float:
    """Gateway CPU seconds per call over n calls at the given concurrency."""
    queue = iter(range(n))

    async def worker():
        for _ in queue:
            await call(session, url, group)

    c0 = cpu_seconds(gw_pid)
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=120)
    return (cpu_seconds(gw_pid) - c0) / n


async def run(calls: int, rounds: int, url: str, gw_pid: int) -> dict:
    lat: dict[str, list[float]] = {k: [] for k in PATHS}
    cpu: dict[str, list[float]] = {k: [] for k in PATHS}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        await wait_ready(session, url)
        for group in PATHS.values():  # warm-up: connections, caches, credentials
            await sequential(session, url, group, 200)
        for _ in range(rounds):
            for name, group in PATHS.items():
                lat[name] += await sequential(session, url, group, calls)
                cpu[name].append(await burst(session, url, group, calls, gw_pid))
    return {"lat": lat, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            oai, oai_url = start_sim("openai")
            procs.append(oai)
            br, br_url = start_sim("bedrock")
            procs.append(br)
            gw, url = start_gateway(oai_url, br_url, Path(tmp))
            procs.append(gw)
            res = asyncio.run(run(args.calls, args.rounds, url, gw.pid))
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
    med = {k: statistics.median(v) * 1e6 for k, v in res["lat"].items()}
    p99 = {k: statistics.quantiles(v, n=100)[98] * 1e6 for k, v in res["lat"].items()}
    cpu = {k: statistics.median(v) * 1e6 for k, v in res["cpu"].items()}
    print(
        f"### Translation overhead: Bedrock path vs OpenAI pass-through ({args.rounds} rounds x {args.calls} calls per path)\n"
    )
    print("| path | median latency (µs) | p99 latency (µs) | gateway CPU per call (µs) |")
    print("|---|---|---|---|")
    for k in PATHS:
        print(f"| {k} | {med[k]:.0f} | {p99[k]:.0f} | {cpu[k]:.0f} |")
    print(
        f"| **added by Bedrock** | **{med['bedrock'] - med['openai']:+.0f}** | {p99['bedrock'] - p99['openai']:+.0f} | "
        f"**{cpu['bedrock'] - cpu['openai']:+.0f}** |"
    )
    print(
        "\nTarget: ≤ 100 µs added per call. Non-streaming chat, sequential calls for latency, concurrency 16 for CPU; "
        "the Bedrock simulator skips signature verification so only gateway work is compared."
    )


if __name__ == "__main__":
    main()
