"""Admissions through the limiter on Redis counters, with and without leases (counters_lease): script
calls per 1,000 admissions, Python opcodes and CPU per admission, and the admission's wait, one client
calling in turn (c=1), each call settled before the next, as a gateway's calls are.

    PYTHONPATH=src:tests python bench/lease_admission.py [--calls 2000] [--leases on,off] [--opcodes] [--gap-ms 1]

A real redis-server as the tests start it (loopback, its own port). The opcodes are this process's
Python bytecode instructions per admission and settlement (sys.settrace), deterministic enough to
compare on a loaded machine; the wait (p50/p90/p99, microseconds) is wall-clock and only a hint there.
`--leases off` on a tree without leases (a copy of main, through PYTHONPATH) measures main.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from e2e.services import RedisServer
from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.schema.principal import Principal

PRICES = PriceTable({"a": DeploymentPrice.of(1.0, 2.0, None, "USD")})
RULES = dict(  # the usual shape: a tenant budget, a key's requests and tokens per minute
    budgets=[BudgetRule(scope="tenant", id="*", amount="1000000", period="month")],
    rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=10_000_000, tokens_per_minute=10**12)],
)


class Dep:
    def __init__(self, name: str) -> None:
        self.name, self.max_output_tokens = name, None


def evalsha_calls(url: str) -> int:
    return redis.Redis.from_url(url).info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


class Opcodes:
    """Python opcodes executed while on (sys.settrace with per-opcode events)."""

    def __init__(self) -> None:
        self.n = 0

    def _trace(self, frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.n += 1
        return self._trace

    def __enter__(self):
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)


async def run(url: str, leases: bool, calls: int, opcodes: bool, gap_s: float = 0.0) -> dict:
    cfg = MeteringConfig(key_prefix=f"b{uuid.uuid4().hex[:8]}:", **RULES)
    if "leases" in inspect.signature(RedisCounters).parameters:
        counters = RedisCounters(url, prefix=cfg.key_prefix, leases=leases)
    else:  # a tree without leases (main)
        assert not leases, "this tree has no leases"
        counters = RedisCounters(url, prefix=cfg.key_prefix)
    lim = Limiter(cfg, PRICES, counters)
    await lim.start()
    await counters.claim()
    p, plan = Principal(tenant="t", subject="k", source="api_key", key_id="k"), [Dep("a")]
    for i in range(200):  # warm: the shape, the connection, the leases' sizes
        t = await lim.admit(p, "g", plan, 1000, 500, f"w{i}")
        t.settle(1_000_000, "USD", 1200)
        await asyncio.sleep(0)
    before = evalsha_calls(url)
    waits: list[float] = []
    ops = Opcodes()
    cpu0 = time.process_time()
    for i in range(calls):
        asked = time.perf_counter()
        if opcodes:
            with ops:
                t = await lim.admit(p, "g", plan, 1000, 500, f"c{i}")
                t.settle(1_000_000, "USD", 1200)
        else:
            t = await lim.admit(p, "g", plan, 1000, 500, f"c{i}")
            t.settle(1_000_000, "USD", 1200)
        waits.append(time.perf_counter() - asked)
        await asyncio.sleep(gap_s)  # a loop turn between calls, as on a server (the sender's turn too)
    cpu = time.process_time() - cpu0
    script = evalsha_calls(url) - before
    await lim.close()
    q = statistics.quantiles(waits, n=10)
    return {
        "script_calls_per_1000": 1000 * script / calls,
        "opcodes_per_call": ops.n / calls if opcodes else None,
        "cpu_us_per_call": 1e6 * cpu / calls,
        "p50_us": 1e6 * statistics.median(waits),
        "p90_us": 1e6 * q[8],
        "p99_us": 1e6 * statistics.quantiles(waits, n=100)[98],
        # admissions that waited about a Redis round trip or more (loopback: ~100 us and up)
        "over_150us_per_1000": 1000 * sum(w > 150e-6 for w in waits) / calls,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--leases", default="on,off")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    ap.add_argument("--opcodes", action="store_true", help="count Python opcodes (a separate, slower run)")
    ap.add_argument("--gap-ms", type=float, default=0.0, help="pause between calls (0: one loop turn)")
    args = ap.parse_args()
    server = RedisServer()
    try:
        for _ in range(args.rounds):
            for mode in args.leases.split(","):
                r = await run(server.url, mode == "on", min(args.calls, 20_000), False, args.gap_ms / 1000)
                line = " ".join(f"{k}={v:.1f}" for k, v in r.items() if v is not None)
                print(f"leases={mode} {line}", flush=True)
        if args.opcodes:
            for mode in args.leases.split(","):
                r = await run(server.url, mode == "on", min(args.calls, 2000), True)
                print(f"leases={mode} opcodes_per_call={r['opcodes_per_call']:.0f}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
