"""Cost of metering per call: Limiter.admit + Metering.record (budgets, rate limits, the usage row
and two contract ledger accruals, both batched), embedded and replicated, paced at 4,000 calls/s.

    .venv/bin/python bench/metering_bench.py [--seconds 5] [--rate 4000]

Runs like the gateway does (uvloop, the gateway's GC tuning), one task per call started every
millisecond. Reports CPU microseconds per call for the whole process (admit, record, the
writer's commits, the Redis client) minus the same loop without metering (the harness's own
task per call), and the admit latency. No upstream call is made: this is metering's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from e2e.services import RedisServer
from multihome.accounting.record import CallRecord, Usage
from multihome.api.gateway import _tune_gc
from multihome.config.contracts import parse_contracts
from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.contracts.service import ContractsService
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering
from multihome.schema.principal import Principal
from multihome.storage import open_store
from pg import PostgresServer


class Dep:
    def __init__(self, name):
        self.name, self.max_output_tokens = name, None


CFG = dict(
    budgets=[
        BudgetRule(scope="tenant", id="*", amount="1000000", period="month"),
        BudgetRule(scope="key", id="*", amount="100000", period="day"),
    ],
    rate_limits=[
        RateLimitRule(scope="key", id="*", requests_per_minute=10_000_000, tokens_per_minute=10**12),
        RateLimitRule(scope="deployment", id="a", requests_per_minute=10_000_000),
    ],
)
# Every call accrues to a revenue share and a commitment: two ledger entries per call, batched.
CONTRACTS = {
    "revenue_share": [
        {"id": "rs", "rate": "0.15", "starts_on": "2026-01-01", "ends_on": "2030-12-31", "cap": "1000000"}
    ],
    "commitments": [
        {"id": "commit", "provider": "p", "amount": "1000000", "starts_on": "2026-01-01", "ends_on": "2030-12-31"}
    ],
}
PRICES = PriceTable({"a": DeploymentPrice.of(2.5, 10, 1.25, "USD"), "b": DeploymentPrice.of(3, 12, None, "USD")})
PLAN = [Dep("a"), Dep("b")]
KEYS = [Principal(tenant=f"ten_{i % 10}", subject=f"key_{i}", source="api_key", key_id=f"key_{i}") for i in range(100)]


def record_for(i: int, p: Principal, rid: str) -> CallRecord:
    now = time.time()
    return CallRecord(
        request_id=rid,
        started_at=now,
        finished_at=now,
        endpoint="chat",
        tenant=p.tenant,
        subject=p.subject,
        principal_source=p.source,
        key_id=p.key_id,
        model_group="g",
        deployment="a",
        provider="p",
        status=200,
        outcome="ok",
        usage=Usage(prompt_tokens=900, completion_tokens=120, cached_tokens=100),
        latency_ms=5.0,
    )


async def paced(one, seconds: float, rate: int) -> tuple[int, float, float]:
    """Start `one(i)` at `rate` per second in 1 ms ticks; (calls, CPU seconds, wall seconds)."""
    total = int(seconds * rate)
    tick, per_tick = 0.001, max(1, rate // 1000)
    running: set[asyncio.Task] = set()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    i, next_at = 0, wall0
    while i < total:
        for _ in range(per_tick):
            task = asyncio.ensure_future(one(i))
            running.add(task)
            task.add_done_callback(running.discard)
            i += 1
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    if running:
        await asyncio.gather(*running)
    return total, time.process_time() - cpu0, time.perf_counter() - wall0


async def harness_cost(seconds: float, rate: int) -> float:
    """CPU per call of the pacing loop alone (a task per call, nothing metered)."""

    async def one(i: int) -> None:
        await asyncio.sleep(0)

    total, cpu, _ = await paced(one, seconds, rate)
    return cpu / total


async def run(
    redis_url: str | None, seconds: float, rate: int, db: str, tag: str, with_contracts: bool, spool: bool = True
) -> tuple[float, list[float], int]:
    """One metered run: (CPU seconds per call, admit latencies, rows written). `spool`: each usage row
    also in a local spool file before the call is answered, as a gateway has it (docs/metering.md)."""
    store = await open_store(db, migrate=True)
    await store.close()
    counters = RedisCounters(redis_url) if redis_url else None
    spool_dir = tempfile.mkdtemp(prefix="mh-metering-bench-spool-") if spool else None
    m = Metering(MeteringConfig(**CFG), PRICES, storage_url=db, counters=counters, spool_dir=spool_dir)
    contracts = ContractsService(parse_contracts(CONTRACTS), db) if with_contracts else None
    if contracts is not None:  # as the app wires it: the spool holds rows until the ledger has them
        await contracts.start()
        m.hold_spool(contracts)
    await m.start()
    latencies: list[float] = []

    async def one(i: int) -> None:
        p = KEYS[i % len(KEYS)]
        rid = f"{tag}-{i}"
        t0 = time.perf_counter()
        await m.limiter.admit(p, "g", PLAN, 900, 200, rid)
        latencies.append(time.perf_counter() - t0)
        m.record(record_for(i, p, rid))

    total, cpu, _ = await paced(one, seconds, rate)
    t_flush = time.process_time()
    await m.flush()  # rows and accruals still queued are part of the cost
    if contracts is not None:
        await contracts.flush()
    cpu += time.process_time() - t_flush
    if contracts is not None:
        assert contracts.committed == 2 * total, "every call accrues to both agreements"
        await contracts.close()
    await m.close()
    if spool_dir is not None:
        shutil.rmtree(spool_dir)
    return cpu / total, latencies, m.writer.written


async def mode(
    label: str,
    redis_url: str | None,
    databases,
    seconds: float,
    rate: int,
    rounds: int,
    with_contracts: bool,
    spool: bool = True,
) -> None:
    """Rounds of (harness alone, metered): the median of metered minus harness, so VM noise between
    rounds does not land on one side only."""
    net, harness, lat, rows = [], [], [], 0
    for r in range(rounds):
        base = await harness_cost(min(seconds, 2), rate)
        cpu, latencies, written = await run(
            redis_url, seconds, rate, databases(r), f"{label}-{r}", with_contracts, spool
        )
        harness.append(base)
        net.append(cpu - base)
        lat += latencies
        rows += written
    lat.sort()
    us = statistics.median(net) * 1e6
    target = "≤ 100 µs" if not with_contracts else "–"
    met = ("yes" if us <= 100 else "**no**") if not with_contracts else "–"
    label += " + 2 contract accruals" if with_contracts else ""
    label += "" if spool else " (no usage spool)"
    print(
        f"| {label} | {rate:,} | {rounds} × {int(seconds * rate):,} | **{us:.1f} µs** "
        f"({min(net) * 1e6:.1f}–{max(net) * 1e6:.1f}) | {statistics.median(harness) * 1e6:.1f} µs | "
        f"{statistics.median(lat) * 1e6:.0f} µs | {lat[int(len(lat) * 0.99)] * 1e6:.0f} µs | {rows:,} | "
        f"{target} | {met} |"
    )


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
    print(
        f"In-process hot path, back to back: admit {(t1 - t0) / n * 1e6:.1f} µs, record {(t2 - t1) / n * 1e6:.1f} µs per call "
        "(no I/O: when this line moves between runs of the same code, the machine did, and the table with it)."
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rate", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    _tune_gc()
    print("## Metering, budgets and rate limits (bench/metering_bench.py)")
    print()
    print("CPU of the whole gateway process per call (admission, settlement, usage row, the database and Redis")
    print("clients) minus the pacing loop's own cost; 2 budgets and 3 rate limits apply to every call.")
    print("Embedded: in-process counters, SQLite in the process. Replicated: Redis counters, PostgreSQL rows")
    print("(the servers' own CPU is theirs, not the gateway's). The target covers metering, budgets and rate")
    print("limits; the last two rows add a revenue share and a commitment that every call accrues to. Every")
    print("row but the one so marked writes each usage row to the usage spool too, as a gateway does.")
    print()
    await sync_cost()
    print()
    print(
        "| mode | calls/s | calls | metering CPU per call, median (range) | harness | admit p50 | admit p99 | rows | target | met |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        redis, pg = RedisServer(), PostgresServer()
        try:
            for with_contracts in (False, True):
                await mode(
                    "embedded",
                    None,
                    lambda r: f"sqlite+aiosqlite:///{tmp}/{with_contracts}{r}.db",
                    args.seconds,
                    args.rate,
                    args.rounds,
                    with_contracts,
                )
                await mode(
                    "replicated",
                    redis.url,
                    lambda r: pg.create_database(),
                    args.seconds,
                    args.rate,
                    args.rounds,
                    with_contracts,
                )
                if not with_contracts:  # what the spool costs: the same embedded run without it
                    await mode(
                        "embedded",
                        None,
                        lambda r: f"sqlite+aiosqlite:///{tmp}/nospool{r}.db",
                        args.seconds,
                        args.rate,
                        args.rounds,
                        False,
                        spool=False,
                    )
        finally:
            redis.stop()
            pg.stop()


if __name__ == "__main__":
    uvloop.run(main())
