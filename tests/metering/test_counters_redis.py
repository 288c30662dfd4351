"""The Redis counters' client side: one script call per loop tick, settlements riding along,
and recovery when Redis loses the script or the connection."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from multihome.metering.config import MeteringConfig, RateLimitRule
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import PriceTable

from .conftest import Dep, RedisServer, principal

pytestmark = pytest.mark.anyio


def evalsha_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


def limiter(url: str, **cfg) -> Limiter:
    cfg = MeteringConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:", **cfg)
    return Limiter(cfg, PriceTable({}), RedisCounters(url, prefix=cfg.key_prefix))


async def test_one_script_call_admits_a_whole_tick_each_with_its_own_answer(redis_server):
    lim = limiter(redis_server.url, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=30)])
    await lim.start()
    await lim.counters.claim()  # as Metering does at start, once it has seeded the counters
    before = evalsha_calls(redis_server.url)
    results = await asyncio.gather(
        *(lim.admit(principal(), "g", [Dep("d")], 10, 10, f"r{i}") for i in range(50)), return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(admitted) == 30 and len(refused) == 20
    assert all(r.status == 429 and r.body.code == "rate_limit_exceeded" for r in refused)
    remaining = sorted(int(dict(t.headers)[b"x-ratelimit-remaining-requests"]) for t in admitted)
    assert remaining == list(range(30))  # every admission saw its own count
    assert evalsha_calls(redis_server.url) - before == 1
    await lim.close()


async def test_settlements_ride_along_with_the_next_admissions(redis_server):
    lim = limiter(redis_server.url, rate_limits=[RateLimitRule(scope="key", id="*", tokens_per_minute=1_000_000)])
    await lim.start()
    tickets = await asyncio.gather(*(lim.admit(principal(), "g", [Dep("d")], 100, 100, f"s{i}") for i in range(10)))
    key = tickets[0]._tokens[0][0]
    before = evalsha_calls(redis_server.url)
    for t in tickets:
        t.settle(0, "USD", 50)  # each reserved 200 tokens and used 50
    await lim.admit(principal(), "g", [Dep("d")], 100, 100, "next")
    await lim.drain()
    assert evalsha_calls(redis_server.url) - before == 1
    assert await lim.counters.read([key], 0) == [10 * 50 + 200]
    await lim.close()


async def test_admission_survives_script_flush_and_redis_restart():
    server = RedisServer()
    lim = limiter(server.url, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100)])
    try:
        await lim.start()
        t = await lim.admit(principal(), "g", [Dep("d")], 1, 1, "a")
        assert dict(t.headers)[b"x-ratelimit-remaining-requests"] == b"99"
        redis.Redis.from_url(server.url).script_flush()
        t = await lim.admit(principal(), "g", [Dep("d")], 1, 1, "b")
        assert dict(t.headers)[b"x-ratelimit-remaining-requests"] == b"98"
        # A restart drops the connection and the script, and Redis comes back empty.
        server.stop()
        server = RedisServer(port=server.port)
        t = await lim.admit(principal(), "g", [Dep("d")], 1, 1, "c")
        assert dict(t.headers)[b"x-ratelimit-remaining-requests"] == b"99"
    finally:
        await lim.close()
        server.stop()
