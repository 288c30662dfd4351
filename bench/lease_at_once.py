"""The hot path's admission and settlement (`Limiter.at_once`, `Ticket.settle`) on in-process counters and on
Redis counters with leases (a real redis-server, as the tests start one): thread CPU per admission +
settlement, 20,000 in turn, three interleaved runs each; then Python opcodes per call (sys.settrace).
Admissions the leases cannot cover go through `admit` (counted as misses).

    PYTHONPATH=src:tests python bench/lease_at_once.py
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from e2e.services import RedisServer
from lease_admission import PRICES, RULES, Dep, Opcodes
from multihome.config.metering import MeteringConfig
from multihome.metering.counters import LocalCounters
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.schema.principal import Principal


async def run(kind: str, url: str, calls: int, opcodes: bool) -> tuple[float, float, int]:
    cfg = MeteringConfig(key_prefix=f"b{uuid.uuid4().hex[:8]}:", **RULES)
    counters = RedisCounters(url, prefix=cfg.key_prefix) if kind == "redis" else LocalCounters()
    lim = Limiter(cfg, PRICES, counters)
    await lim.start()
    if isinstance(counters, RedisCounters):
        await counters.claim()
    p, plan = Principal(tenant="t", subject="k", source="api_key", key_id="k"), [Dep("a")]

    async def one(i: int):
        t = lim.at_once(p, "g", plan, 1000, 500, f"c{i}")
        if t is None:
            return await lim.admit(p, "g", plan, 1000, 500, f"c{i}"), 1
        return t, 0

    for i in range(500):  # warm: the shape, the connection, the leases' sizes
        t, _ = await one(i)
        t.settle(1_000_000, "USD", 1200)
        await asyncio.sleep(0)
    ops, miss, cpu = Opcodes(), 0, 0.0
    for i in range(calls):
        c0 = time.thread_time()
        if opcodes:
            with ops:
                t, m = await one(i)
                t.settle(1_000_000, "USD", 1200)
        else:
            t, m = await one(i)
            t.settle(1_000_000, "USD", 1200)
        cpu += time.thread_time() - c0
        miss += m
        await asyncio.sleep(0)  # a loop turn between calls (the sender's too)
    await lim.close()
    return cpu * 1e6 / calls, ops.n / calls, miss


async def main() -> None:
    server = RedisServer()
    try:
        for _ in range(3):
            for kind in ("local", "redis"):
                cpu, _, miss = await run(kind, server.url, 20_000, False)
                print(f"{kind}: {cpu:.2f} us of thread CPU per admission + settlement, {miss} misses", flush=True)
        for kind in ("local", "redis"):
            _, ops, miss = await run(kind, server.url, 2000, True)
            print(f"{kind}: {ops:.0f} opcodes per admission + settlement, {miss} misses", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
