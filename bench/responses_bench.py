"""A Responses API turn through Multihome vs a chat completion through Multihome, same run (issue 15
target: creating a response costs <= 0.5 ms more than the chat completion, at c=1 and c=64, for a
20-turn conversation).

    .venv/bin/python bench/responses_bench.py [--n 300] [--rounds 3] [--per-worker 40]

One OpenAI simulator, one gateway worker with SQLite storage and the `local` KMS. A 20-turn
conversation is created through `/v1/responses` (chained by previous_response_id); then, in
interleaved rounds:
- chat: `/v1/chat/completions` with the same conversation as 41 messages (what a chat client sends);
- response: `/v1/responses` with `previous_response_id` of the 20th turn and the new question
  (the gateway rebuilds the 40 items from its store, sends the same 41 messages, stores the turn
  durably before it answers);
- response, store false: the same, not stored (what the store's commit costs, by difference);
- native: the same response on a deployment served natively (`/v1/responses` on the simulator).
Both deployments are on the same simulator, so the difference is the gateway's own work. Latency is
per request (client-measured, loopback); at c=64, 64 concurrent clients, each `--per-worker` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_bench import KEY, machine, start_gateway, start_sim

TARGET_MS = 0.5
TURNS = 20
QUESTION = "Please compare the regions on price, latency and data residency for this workload, turn {i}."
CONFIG = """
server: {{api_keys_env: [BENCH_CLIENT_KEY]}}
storage: {{url: "sqlite:///{db}", state_sync: {sync}}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}}}
providers:
  sim: {{kind: openai, endpoint: "{sim}/v1", auth: {{api_key_env: BENCH_SIM_KEY}}, max_connections: 4096}}
deployments:
  chat@sim: {{provider: sim, model: bench-model, responses_api: translated}}
  native@sim: {{provider: sim, model: bench-model}}
model_groups:
  bench: {{deployments: [chat@sim]}}
  bench-native: {{deployments: [native@sim]}}
"""
_encode = msgspec.json.encode


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> dict:
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
        data = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {data[:300]!r}")
        return msgspec.json.decode(data)


async def conversation(send: Callable[[str, bytes], Awaitable[dict]]) -> tuple[str, list[dict]]:
    """20 turns through /v1/responses (`send(path, body)`); -> the last response id, and the same
    conversation as chat messages."""
    prev, messages = None, []
    for i in range(TURNS):
        q = QUESTION.format(i=i)
        body: dict = {"model": "bench", "input": q}
        if prev:
            body["previous_response_id"] = prev
        out = await send("/v1/responses", _encode(body))
        text = "".join(p["text"] for item in out["output"] for p in item.get("content", []) if "text" in p)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": text}]
        prev = out["id"]
    assert prev is not None
    return prev, messages


def calls(last: str, messages: list[dict]) -> dict[str, tuple[str, dict]]:
    """The kinds of call compared, each as (path, body): the 21st turn as a chat completion and as responses."""
    question = QUESTION.format(i=TURNS)
    return {
        "chat": (
            "/v1/chat/completions",
            {"model": "bench", "messages": [*messages, {"role": "user", "content": question}]},
        ),
        "response": ("/v1/responses", {"model": "bench", "input": question, "previous_response_id": last}),
        "response, store false": (
            "/v1/responses",
            {"model": "bench", "input": question, "previous_response_id": last, "store": False},
        ),
        "response, native": (
            "/v1/responses",
            {"model": "bench-native", "input": question, "previous_response_id": last},
        ),
    }


async def sequential(session: aiohttp.ClientSession, url: str, body: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await post(session, url, body)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def concurrent(session: aiohttp.ClientSession, url: str, body: bytes, c: int, each: int) -> tuple[list, float]:
    lat: list[float] = []

    async def worker() -> None:
        lat.extend(await sequential(session, url, body, each))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return lat, c * each / (time.perf_counter() - t0)


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def interleaved(session: aiohttp.ClientSession, bodies: dict, n: int) -> dict[str, list[float]]:
    """c=1: one call of each kind in turn, n times, so a change in the machine's load hits every kind alike."""
    out: dict[str, list[float]] = {k: [] for k in bodies}
    for _ in range(n):
        for k, (url, body) in bodies.items():
            out[k] += await sequential(session, url, body, 1)
    return out


async def run(base: str, args: argparse.Namespace, gateway_pid: int) -> dict:
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(
        connector=conn, headers={"authorization": f"Bearer {KEY}"}, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        last, messages = await conversation(lambda path, body: post(session, base + path, body))
        kinds = calls(last, messages)
        bodies = {k: (base + path, _encode(body)) for k, (path, body) in kinds.items()}
        for url, body in bodies.values():  # warm every path (connections, caches, compiled queries)
            await sequential(session, url, body, 20)
        c1: dict[str, list[float]] = {k: [] for k in kinds}
        cpu1: dict[str, list[float]] = {k: [] for k in kinds}
        c64: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for k, values in (await interleaved(session, bodies, args.n)).items():
                c1[k].append(statistics.median(values))
            for k, (url, body) in bodies.items():  # c=1 CPU: a block of each kind alone (ticks of 10 ms)
                cpu0 = cpu_s(gateway_pid)
                await sequential(session, url, body, args.n)
                cpu1[k].append((cpu_s(gateway_pid) - cpu0) * 1000 / args.n)
            for k, (url, body) in bodies.items():
                cpu0 = cpu_s(gateway_pid)
                lat, rps = await concurrent(session, url, body, 64, args.per_worker)
                cpu = (cpu_s(gateway_pid) - cpu0) * 1000 / (64 * args.per_worker)
                c64[k].append((statistics.median(lat), rps, cpu))
        return {"c1": c1, "cpu1": cpu1, "c64": c64, "messages": len(messages) + 1}


def report(res: dict, args: argparse.Namespace, sync: str) -> str:
    c1, c64 = res["c1"], res["c64"]
    med = {k: statistics.median(v) for k, v in c1.items()}
    cpu1 = {k: statistics.median(v) for k, v in res["cpu1"].items()}
    lat64 = {k: statistics.median(x[0] for x in v) for k, v in c64.items()}
    rps64 = {k: statistics.median(x[1] for x in v) for k, v in c64.items()}
    cpu64 = {k: statistics.median(x[2] for x in v) for k, v in c64.items()}

    def added(values: dict[str, float], k: str) -> str:
        return "–" if k == "chat" else f"{values[k] - values['chat']:+.2f} ms"

    lines = [
        f"### `storage.state_sync: {sync}`",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; load average "
        f"{os.getloadavg()[0]:.1f} at the end.",
        f"A {TURNS}-turn conversation ({res['messages']} messages on the next turn); SQLite storage, the `local` "
        f"KMS, one gateway worker and one OpenAI simulator, client in-process (aiohttp); median of {args.rounds} "
        f"rounds ({args.n} calls of each kind at c=1, interleaved call by call; 64 clients x {args.per_worker} "
        "calls at c=64, where latency is mostly queueing, so the gateway's CPU per call is the cost compared).",
        "",
        "| call | c=1 p50 | added vs chat | c=1 gateway CPU per call | added vs chat "
        "| c=64 gateway CPU per call | added vs chat | c=64 p50 | c=64 req/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in c1:
        lines.append(
            f"| {k} | {med[k]:.2f} ms | {added(med, k)} | {cpu1[k]:.2f} ms | {added(cpu1, k)} | "
            f"{cpu64[k]:.2f} ms | {added(cpu64, k)} | "
            f"{lat64[k]:.1f} ms | {rps64[k]:.0f} |"
        )
    met1 = med["response"] - med["chat"] <= TARGET_MS
    met1cpu = cpu1["response"] - cpu1["chat"] <= TARGET_MS
    met64 = cpu64["response"] - cpu64["chat"] <= TARGET_MS
    lines += [
        "",
        f"Target (a stored response vs a chat completion): ≤ {TARGET_MS} ms added — c=1: "
        f"{'met' if met1 else '**not met**'} (latency), {'met' if met1cpu else '**not met**'} (CPU per call); c=64 (CPU per call): {'met' if met64 else '**not met**'}.",
        "c=1 p50 per round: " + "; ".join(f"{k} " + "/".join(f"{v:.2f}" for v in c1[k]) for k in c1) + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-worker", type=int, default=40)
    ap.add_argument("--sync", default="full,normal", help="storage.state_sync values to run, in order")
    args = ap.parse_args()
    print("## Responses API vs chat completions through Multihome (bench/responses_bench.py)")
    for sync in args.sync.split(","):
        tmp = Path(tempfile.mkdtemp(prefix="responses-bench-"))
        sim, sim_url = start_sim()
        port = 18000 + os.getpid() % 1000
        gw = None
        try:
            config = CONFIG.format(sim=sim_url, db=tmp / "multihome.db", tmp=tmp, sync=sync)
            gw = start_gateway(sim_url, port, tmp, config_text=config)
            res = asyncio.run(run(f"http://127.0.0.1:{port}", args, gw.pid))
            print()
            print(report(res, args, sync))
        finally:
            for p in (gw, sim):
                if p is not None:
                    p.terminate()
                    p.wait(10)


if __name__ == "__main__":
    main()
