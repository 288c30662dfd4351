"""An empty Redis keeps the period's spend and the minute's rate counts: two replicas find the
counters gone on their next script call, re-seed them from the usage rows (once between them),
and calls in flight when Redis emptied still settle their whole cost."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering
from multihome.schema.errors import ApiError

from .conftest import Dep, RedisServer, call, principal

pytestmark = pytest.mark.anyio
PRICES = PriceTable({"dep-a": DeploymentPrice.of("2.5", "10", None, "USD")})  # per 1M tokens
PLAN = [Dep("dep-a")]
SPEND = 3_500_000  # one recorded call: 1000 prompt + 100 completion tokens = 0.0035
RESERVE = 1_352_500  # admitting 100 prompt + 100 output tokens: (125 + 16) * 2.5 + 100 * 10 per 1M


class Replicas:
    """Two gateways' metering on one database and one real redis-server, which can be restarted empty."""

    def __init__(self, tmp_path, leases: bool = True, **cfg) -> None:
        self.leases = leases
        self.url = f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}"
        self.cfg = MeteringConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:", **cfg)
        self.now = (time.time() // 60) * 60 + 1  # one second into this minute: one rate window throughout
        self.server = RedisServer()
        self.replicas: list[Metering] = []

    async def __aenter__(self) -> Replicas:
        from multihome.storage import open_store

        await (await open_store(self.url, migrate=True)).close()
        for _ in range(2):
            m = Metering(
                self.cfg,
                PRICES,
                storage_url=self.url,
                clock=lambda: self.now,
                counters=RedisCounters(self.server.url, prefix=self.cfg.key_prefix, leases=self.leases),
            )
            await m.start()
            self.replicas.append(m)
        return self

    async def __aexit__(self, *exc) -> None:
        for m in self.replicas:
            await m.close()
        self.server.stop()

    def restart_redis_empty(self) -> None:
        self.server.stop()
        self.server = RedisServer(port=self.server.port)

    def record(self, m: Metering, rid: str, key_id="key_a") -> None:
        m.record(call(rid, deployment="dep-a", prompt=1000, completion=100, key_id=key_id, started=self.now))

    async def counter(self, key: str) -> int:
        return (await self.replicas[0].limiter.counters.read([key], 0))[0]


async def test_an_empty_redis_keeps_the_periods_spend_and_the_minutes_requests(tmp_path):
    budget = [BudgetRule(scope="key", id="key_a", amount="0.0100", period="day")]
    rpm = [RateLimitRule(scope="key", id="key_b", requests_per_minute=5)]
    async with Replicas(tmp_path, budgets=budget, rate_limits=rpm) as w:
        a, b = w.replicas
        for i, m in enumerate((a, b, a)):  # 3 x 0.0035 through both replicas: the budget is used up
            ticket = await m.limiter.admit(principal(key_id="key_a"), "g", PLAN, 100, 100, f"spend{i}")
            w.record(m, f"spend{i}")
        for i, m in enumerate((a, b, a, b)):  # key_b: 4 of its 5 requests this minute
            await m.limiter.admit(principal(key_id="key_b"), "g", PLAN, 100, 100, f"rate{i}")
            w.record(m, f"rate{i}", key_id="key_b")
        for m in (a, b):
            await m.flush()
        budget_key = ticket.reserved[0][0]
        assert await w.counter(budget_key) == 3 * SPEND

        w.restart_redis_empty()
        # Both replicas find the counters gone at once, and both re-seed them: counted once.
        refused = await asyncio.gather(
            *(
                m.limiter.admit(principal(key_id="key_a"), "g", PLAN, 100, 100, f"after-{i}")
                for i, m in enumerate((a, b))
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, ApiError) and r.body.code == "budget_exceeded" for r in refused), refused
        assert await w.counter(budget_key) == 3 * SPEND
        # The minute's requests are seeded too: key_b has exactly one left, not five.
        await b.limiter.admit(principal(key_id="key_b"), "g", PLAN, 100, 100, "rate-last")
        with pytest.raises(ApiError) as limited:
            await a.limiter.admit(principal(key_id="key_b"), "g", PLAN, 100, 100, "rate-over")
        assert limited.value.body.code == "rate_limit_exceeded"


async def test_calls_in_flight_when_redis_emptied_settle_their_whole_cost(tmp_path):
    budget = [BudgetRule(scope="key", id="*", amount="1", period="month")]
    # Without leases: the counters are read exactly, and the next admission is the next script call
    # (with leases, what a replica leased is admitted until its next call: test_counter_leases.py).
    async with Replicas(tmp_path, leases=False, budgets=budget) as w:
        a, b = w.replicas
        await a.limiter.admit(principal(), "g", PLAN, 100, 100, "done")
        w.record(a, "done")
        await a.flush()
        in_flight = await b.limiter.admit(principal(), "g", PLAN, 100, 100, "in-flight")
        key = in_flight.reserved[0][0]
        assert await w.counter(key) == SPEND + RESERVE

        w.restart_redis_empty()
        await asyncio.gather(
            *(m.limiter.admit(principal(), "g", PLAN, 100, 100, f"next-{i}") for i, m in enumerate((a, b)))
        )
        # The stored spend once, and the two new reservations; the lost reservation is not held.
        assert await w.counter(key) == SPEND + 2 * RESERVE
        w.record(b, "in-flight")  # its usage row was not in the seed: its whole cost is added
        await b.flush()
        assert await w.counter(key) == 2 * SPEND + 2 * RESERVE
