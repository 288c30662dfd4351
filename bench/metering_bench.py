"""Cost of metering per call: Limiter.admit + Metering.record (budgets, rate limits, usage row
through the batched SQLite writer), in process and with a real Redis, paced at 4,000 calls/s.

    .venv/bin/python bench/metering_bench.py [--seconds 5] [--rate 4000]

Reports CPU microseconds per call for the whole process (admit, record, the writer's commits,
the Redis client) and the admit latency. No upstream call is made: this is metering's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from e2e.services import RedisServer  # noqa: E402

from multihome.accounting.record import CallRecord, Usage  # noqa: E402
from multihome.identity.principal import Principal  # noqa: E402
from multihome.metering.config import BudgetRule, MeteringConfig, RateLimitRule  # noqa: E402
from multihome.metering.counters_redis import RedisCounters  # noqa: E402
from multihome.metering.prices import DeploymentPrice, PriceTable  # noqa: E402
from multihome.metering.service import Metering  # noqa: E402
from multihome.storage import open_store  # noqa: E402


class Dep:
    def __init__(self, name):
        self.name, self.max_output_tokens = name, None


CFG = dict(
    budgets=[BudgetRule(scope="tenant", id="*", amount="1000000", period="month"),
             BudgetRule(scope="key", id="*", amount="100000", period="day")],
    rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=10_000_000, tokens_per_minute=10**12),
                 RateLimitRule(scope="deployment", id="a", requests_per_minute=10_000_000)],
)
PRICES = PriceTable({"a": DeploymentPrice.of(2.5, 10, 1.25, "USD"), "b": DeploymentPrice.of(3, 12, None, "USD")})
PLAN = [Dep("a"), Dep("b")]
KEYS = [Principal(tenant=f"ten_{i % 10}", subject=f"key_{i}", source="api_key", key_id=f"key_{i}") for i in range(100)]


def record_for(i: int, p: Principal, rid: str) -> CallRecord:
    now = time.time()
    return CallRecord(request_id=rid, started_at=now, finished_at=now, endpoint="chat", tenant=p.tenant, subject=p.subject,
                      principal_source=p.source, key_id=p.key_id, model_group="g", deployment="a", provider="p",
                      status=200, outcome="ok", usage=Usage(prompt_tokens=900, completion_tokens=120, cached_tokens=100),
                      latency_ms=5.0)


async def run(label: str, redis_url: str | None, seconds: float, rate: int, db: str) -> None:
    store = await open_store(db, migrate=True)
    await store.close()
    counters = RedisCounters(redis_url) if redis_url else None
    m = Metering(MeteringConfig(**CFG), PRICES, storage_url=db, counters=counters)
    await m.start()
    latencies: list[float] = []

    async def one(i: int) -> None:
        p = KEYS[i % len(KEYS)]
        rid = f"{label}-{i}"
        t0 = time.perf_counter()
        await m.limiter.admit(p, "g", PLAN, 900, 200, rid)
        latencies.append(time.perf_counter() - t0)
        m.record(record_for(i, p, rid))

    total = int(seconds * rate)
    tick, per_tick = 0.01, max(1, rate // 100)
    tasks = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    i = 0
    next_at = wall0
    while i < total:
        for _ in range(per_tick):
            tasks.append(asyncio.ensure_future(one(i)))
            i += 1
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.gather(*tasks)
    await m.flush()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await m.close()
    lat = sorted(latencies)
    print(f"{label:10s} calls={total} achieved={total / wall:,.0f}/s  CPU per call={cpu / total * 1e6:6.1f} us  "
          f"admit p50={statistics.median(lat) * 1e6:6.1f} us  p99={lat[int(len(lat) * 0.99)] * 1e6:6.1f} us  "
          f"rows written={m.writer.written}")


async def sync_cost(n: int = 50_000) -> None:
    """admit + record back to back, no pacing, no writer: the hot path's own cost."""
    m = Metering(MeteringConfig(**CFG), PRICES)
    await m.limiter.start()
    t0 = time.perf_counter()
    for i in range(n):
        p = KEYS[i % len(KEYS)]
        await m.limiter.admit(p, "g", PLAN, 900, 200, str(i))
    t1 = time.perf_counter()
    for i in range(n):
        p = KEYS[i % len(KEYS)]
        m.record(record_for(i, p, str(i)))
    t2 = time.perf_counter()
    await m.limiter.close()
    print(f"in-process hot path: admit {(t1 - t0) / n * 1e6:.1f} us, record {(t2 - t1) / n * 1e6:.1f} us per call")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rate", type=int, default=4000)
    args = ap.parse_args()
    await sync_cost()
    with tempfile.TemporaryDirectory() as tmp:
        await run("in-process", None, args.seconds, args.rate, f"sqlite+aiosqlite:///{tmp}/a.db")
        redis = RedisServer()
        try:
            await run("redis", redis.url, args.seconds, args.rate, f"sqlite+aiosqlite:///{tmp}/b.db")
        finally:
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
