"""The Redis counters' client side: one script call per loop tick, settlements riding along,
and recovery when Redis loses the script or the connection."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
import redis

from multihome.config.metering import MeteringConfig, RateLimitRule
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import PriceTable

from .conftest import Dep, RedisServer, principal

pytestmark = pytest.mark.anyio


def evalsha_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


def limiter(url: str, timeout_s: float = 2.0, leases: bool = True, **cfg) -> Limiter:
    cfg = MeteringConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:", **cfg)
    return Limiter(cfg, PriceTable({}), RedisCounters(url, timeout_s, prefix=cfg.key_prefix, leases=leases))


async def test_one_script_call_admits_a_whole_tick_each_with_its_own_answer(redis_server):
    lim = limiter(redis_server.url, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=30)])
    await lim.start()
    await lim.counters.claim()  # as Metering does at start, once it has seeded the counters
    before = evalsha_calls(redis_server.url)
    results = await asyncio.gather(
        *(lim.admit(principal(), "g", [Dep("d")], 10, 10, f"r{i}") for i in range(50)), return_exceptions=True
    )
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
    key = tickets[0].reserved[0][0]
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
    # Without leases, every admission goes to Redis (with them, these would be admitted from the lease
    # the first one was granted; test_counter_leases.py has an emptied Redis with leases).
    lim = limiter(server.url, leases=False, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100)])
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


async def test_a_settlement_sent_again_after_a_stall_applies_once():
    """Settlements wait out a stalled Redis and are not lost; each try that timed out is left in
    Redis's socket buffers and runs when it resumes, yet the batch is applied once."""
    server = RedisServer()
    lim = limiter(
        server.url, timeout_s=0.3, rate_limits=[RateLimitRule(scope="key", id="*", tokens_per_minute=1_000_000)]
    )
    try:
        await lim.start()
        t = await lim.admit(principal(), "g", [Dep("d")], 100, 100, "a")  # reserves 200 tokens
        key = t.reserved[0][0]
        os.kill(server.popen.pid, signal.SIGSTOP)
        try:
            t.settle(0, "USD", 30)  # -170 tokens, while Redis is stalled
            await asyncio.sleep(1.5)  # several tries time out and are sent again
        finally:
            os.kill(server.popen.pid, signal.SIGCONT)
        await lim.drain()  # the next try gets through
        await asyncio.sleep(0.3)  # and Redis has run whatever copies were still buffered
        assert await lim.counters.read([key], 0) == [30]
    finally:
        await lim.close()
        server.stop()


async def test_a_stalled_redis_holds_no_admission_past_its_deadline():
    """SIGSTOP Redis for 4 s. Every admission asked meanwhile gets the documented fallback
    (fail_open: admitted, unlimited) within timeout_s of asking, plus slack: none waits behind a
    stalled batch (it took up to 2 x timeout_s). One client calling in turn is not held timeout_s
    per call either. And no admission Redis runs late, after its caller gave up, is counted."""
    server = RedisServer()
    now = (time.time() // 60) * 60 + 1  # one rate window throughout
    cfg = MeteringConfig(
        key_prefix=f"t{uuid.uuid4().hex[:8]}:",
        rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000)],
    )
    counters = RedisCounters(server.url, prefix=cfg.key_prefix)  # timeout_s: the documented 2 s
    lim = Limiter(cfg, PriceTable({}), counters, lambda: now)
    await lim.start()
    await counters.claim()
    loop = asyncio.get_running_loop()

    tickets = []

    async def timed(rid: str):
        asked = loop.time()
        tickets.append(await lim.admit(principal(), "g", [Dep("d")], 1, 1, rid))
        return loop.time() - asked, tickets[-1]

    try:
        await timed("warm")
        os.kill(server.popen.pid, signal.SIGSTOP)
        stalled = loop.time()
        try:
            spaced = []
            for i in range(30):  # one call every 100 ms through the first 3 s of the stall
                spaced.append(asyncio.ensure_future(timed(f"spaced-{i}")))
                await asyncio.sleep(0.1)
            in_turn = 0
            while in_turn < 50 and loop.time() - stalled < 3.9:  # one client, call after call
                await timed(f"turn-{in_turn}")
                in_turn += 1
            await asyncio.sleep(max(0.0, 4.0 - (loop.time() - stalled)))
        finally:
            os.kill(server.popen.pid, signal.SIGCONT)
        results = await asyncio.gather(*spaced)
        slowest = max(took for took, _ in results)
        assert slowest <= counters.timeout_s + 1.0, f"an admission waited {slowest:.2f} s"
        assert in_turn == 50, f"only {in_turn} calls in turn during a 4 s stall"
        fallback = [t for _, t in results if dict(t.headers).get(b"x-multihome-limits") == b"unavailable"]
        assert fallback, "the stall should have made admissions fall back"
        # After the stall: Redis answers again, and its counter holds exactly the admissions it
        # answered (those it ran after their deadline were skipped, not counted).
        deadline = time.monotonic() + 10
        while True:
            _, last = await timed("after")
            if b"x-multihome-limits" not in dict(last.headers) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        answered = len([t for t in tickets if b"x-multihome-limits" not in dict(t.headers)])
        used = 100_000 - int(dict(last.headers)[b"x-ratelimit-remaining-requests"])
        assert used == answered, f"Redis counted {used} admissions, answered {answered}"
    finally:
        await lim.close()
        server.stop()


async def test_a_settlement_makes_a_counter_named_to_be_made_unless_its_window_is_over(redis_server):
    """`adjust(deltas, made)`: a counter that does not exist gets the delta and the expiry named for it; one
    that exists is added to (its expiry kept); one whose window is over is not made; the others, never."""
    r = redis.Redis.from_url(redis_server.url)
    counters = RedisCounters(redis_server.url, timeout_s=30, prefix=f"t{uuid.uuid4().hex[:8]}:")
    p = counters._epoch_key[: -len("epoch")]
    await counters.start()
    await counters.claim()
    try:
        now_ms = int(time.time() * 1000)
        r.set(f"{p}there", 10, px=60_000)
        counters.adjust(
            [(f"{p}new", 5), (f"{p}there", 5), (f"{p}over", 5), (f"{p}unnamed", 5)],
            {f"{p}new": now_ms + 90_000, f"{p}there": now_ms + 90_000, f"{p}over": now_ms - 1},
        )
        await counters.drain()
        assert [r.get(f"{p}{k}") for k in ("new", "there", "over", "unnamed")] == [b"5", b"15", None, None]
        assert 60_000 < r.pttl(f"{p}new") <= 90_000
        assert r.pttl(f"{p}there") <= 60_000
    finally:
        await counters.close()
