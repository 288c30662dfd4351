"""Adversarial cases of the Redis counter leases (counters_lease), each against a real Redis: a grant
in flight when a limit was lowered, leases of keys that stopped calling, a counter first admitted with
nothing to reserve on it, an admission given up before it was sent, and a script call retried on a
dead connection after Redis ran it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid

import pytest
import redis

from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering import counters_redis
from multihome.metering.counters_lua import ADMIT
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.rules import Rules

from .conftest import Dep, RedisServer, principal
from .redis_proxy import CUT, RedisProxy
from .test_counter_leases import COST, admit, evalsha_calls, raw, replicas, started

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("same_minute")]


async def test_a_grant_asked_under_the_old_limit_is_not_used_under_a_lowered_one(redis_server):
    # One admission asks for a lease under 10^9 tokens a minute; the limit is lowered to 4,000 before the
    # sender sends it, and a second admission (under 4,000) rides in the same script call. The first one's
    # grant is made under the old limit; it must not let the replica admit past the new one.
    (lim,) = await started(
        replicas(redis_server.url, 1, rate_limits=[RateLimitRule(scope="key", id="*", tokens_per_minute=10**9)])
    )
    first = asyncio.ensure_future(admit(lim, "old"))
    await asyncio.sleep(0)  # `first` queues its admission; the sender has not run yet
    lowered = MeteringConfig(
        key_prefix=lim.cfg.key_prefix, rate_limits=[RateLimitRule(scope="key", id="*", tokens_per_minute=4_000)]
    )
    lim.use_rules(Rules(lowered))
    tickets = await asyncio.gather(first, admit(lim, "new"))
    assert all(t is not None for t in tickets)  # 1,500 tokens each: 3,000 of 4,000
    key = tickets[1].reserved[0][0]
    more = [await admit(lim, f"more{i}") for i in range(6)]
    admitted = 2 + sum(t is not None for t in more)
    assert admitted * 1_500 <= 4_000, f"{admitted} admissions of 1,500 tokens under a limit of 4,000"
    await lim.drain()
    assert raw(redis_server.url, key) <= 4_000
    await lim.close()


async def test_the_leases_of_keys_that_stopped_calling_are_forgotten(redis_server):
    # A tenant's API keys are unbounded, and a `total` budget's counter never expires, so its lease was
    # never pruned: every key that ever called kept an entry (and the idle reaper walked them all each
    # second). One nothing took from for a reaper's turn is given back and forgotten.
    (lim,) = await started(
        replicas(redis_server.url, 1, budgets=[BudgetRule(scope="key", id="*", amount=5, period="total")])
    )
    leases = lim.counters.leases
    for i in range(50):
        t = await lim.admit(principal(key_id=f"key_{i}"), "g", [Dep("dep-a")], 1000, 500, f"k{i}")
        t.settle(COST, "USD", 1000)
    assert len(leases.by_key) == 50
    deadline = time.monotonic() + 15
    while leases.by_key and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not leases.by_key
    await lim.drain()
    counters = redis.Redis.from_url(redis_server.url).keys(f"{lim.cfg.key_prefix}b:key:ten_a:*")
    assert len(counters) == 50 and all(raw(redis_server.url, k.decode()) == COST for k in counters)  # given back
    await lim.close()


async def test_a_counter_first_admitted_with_nothing_to_reserve_still_gets_leases_later(redis_server):
    # A budget in another currency than the deployment's reserves 0 on that call: no lease is asked for.
    # The lease must not stay marked as asking (no answer ever clears it), or every later admission that
    # does reserve on that budget (a deployment priced in its currency) goes to Redis.
    prices = PriceTable(
        {"dep-a": DeploymentPrice.of(1.0, 2.0, None, "USD"), "dep-e": DeploymentPrice.of(1.0, 2.0, None, "EUR")}
    )
    cfg = MeteringConfig(
        key_prefix=f"t{uuid.uuid4().hex[:8]}:",
        budgets=[
            BudgetRule(scope="tenant", id="ten_a", amount=1000, currency="USD"),
            BudgetRule(scope="tenant", id="ten_a", amount=1000, currency="EUR"),
        ],
    )
    now = (time.time() // 60) * 60 + 1
    (lim,) = await started([Limiter(cfg, prices, RedisCounters(redis_server.url, prefix=cfg.key_prefix), lambda: now)])
    usd, eur = [Dep("dep-a")], [Dep("dep-e")]
    first = await lim.admit(principal(), "g", usd, 1000, 500, "usd")  # 0 reserved on the EUR budget
    first.settle(COST, "USD", 1000)
    before = evalsha_calls(redis_server.url)
    for i in range(200):
        t = await lim.admit(principal(), "g", eur, 1000, 500, f"eur{i}")
        t.settle(COST, "EUR", 1000)
        if i % 10 == 0:
            await asyncio.sleep(0.001)  # the sender's turn: top-ups
    calls = evalsha_calls(redis_server.url) - before
    assert calls < 50, f"{calls} script calls for 200 admissions: the EUR budget's lease was never granted"
    await lim.close()


async def test_an_admission_given_up_before_it_was_sent_leaves_its_counter_leasable():
    # An admission asks for a lease as it is queued (its counter is marked as asking, so no second grant
    # is asked for meanwhile). One that the watchdog fails while it waits behind a stalled call (or whose
    # caller is cancelled) is never sent, so no answer clears the mark: its counter must not be left
    # without leases for good (every later admission of it would wait for Redis).
    server = RedisServer()
    (lim,) = replicas(
        server.url, 1, timeout_s=0.3, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000)]
    )
    try:
        await started([lim])
        os.kill(server.popen.pid, signal.SIGSTOP)
        try:
            stalled = asyncio.ensure_future(lim.admit(principal(key_id="key_a"), "g", [Dep("dep-a")], 10, 10, "a"))
            await asyncio.sleep(0.05)  # key_a's admission is in flight, to a Redis that does not answer
            queued = await lim.admit(principal(key_id="key_b"), "g", [Dep("dep-a")], 10, 10, "b")
            assert dict(queued.headers)[b"x-multihome-limits"] == b"unavailable"  # failed while queued
            await stalled
        finally:
            os.kill(server.popen.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until Redis answers again (the sender probes it)
            t = await lim.admit(principal(key_id="key_c"), "g", [Dep("dep-a")], 10, 10, f"probe{time.monotonic()}")
            if b"x-multihome-limits" not in dict(t.headers):
                break
            await asyncio.sleep(0.05)
        before = evalsha_calls(server.url)
        for i in range(100):
            t = await lim.admit(principal(key_id="key_b"), "g", [Dep("dep-a")], 10, 10, f"b{i}")
            assert b"x-multihome-limits" not in dict(t.headers)
            t.settle(0, "USD", 20)
            if i % 10 == 0:
                await asyncio.sleep(0.001)  # the sender's turn: top-ups
        calls = evalsha_calls(server.url) - before
        assert calls < 30, f"{calls} script calls for 100 admissions of key_b: it got no lease again"
    finally:
        await lim.close()
        server.stop()


class _DroppingProxy(RedisProxy):
    """A TCP proxy to Redis that, when armed, drops the next reply and closes that connection (Redis ran
    the command; the client sees a dead connection). While `refuse` is above 0, it drops each script call
    instead (Redis never sees it), closes that connection and counts `refuse` down."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.armed, self.dropped, self.refuse = False, 0, 0

    async def relay(self, data: bytes, replies: bool, conn: dict) -> bytes | object:
        if not replies and self.refuse > 0 and b"EVALSHA" in data:
            self.refuse -= 1
            return CUT
        if replies and self.armed:
            self.armed, self.dropped = False, self.dropped + 1
            return CUT
        return data


async def test_a_call_retried_on_a_dead_connection_after_redis_ran_it_is_not_counted_twice(redis_server):
    # _call sends a call again once on a new connection when the first died. If Redis had run it, its
    # admissions and grants were applied twice (one copy's reservation and grant stayed counted): the
    # copy carries the call's number, and Redis answers it the first run's reply instead.
    proxy = _DroppingProxy(int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    url = await proxy.start()
    (lim,) = await started(
        replicas(url, 1, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000)])
    )
    await admit(lim, "warm", key_id="key_a")  # the sender's connection is made
    proxy.armed = True
    t = await admit(lim, "retried", key_id="key_b")
    assert t is not None and proxy.dropped == 1
    await lim.drain()
    key = f"{lim.cfg.key_prefix}r:key:ten_a:key_b:r:{int(lim.clock()) // 60}"
    try:
        assert raw(redis_server.url, key) == 1, "the admission (and its lease) counted twice"
    finally:
        await lim.close()
        await proxy.close()


def test_a_call_sent_again_gets_the_first_reply_exactly_and_a_late_copy_is_refused(redis_server):
    # The stored reply must give back budget values past 2^47 exactly (nano-units reach 16 digits; a JSON
    # encoding in Lua would round them), and an older call number must apply nothing.
    r = redis.Redis.from_url(redis_server.url)
    p = f"t{uuid.uuid4().hex[:8]}:"
    budget, limit = f"{p}b:tenant:ten_a", 9_000_000_000_000_000
    r.set(f"{p}epoch", "e")
    r.set(budget, 8_999_999_999_999_123)
    script = r.register_script(ADMIT)
    keys = [f"{p}epoch", f"{p}s:x", budget]
    deadline = int(time.time() * 1000) + 60_000
    admission = f"{deadline},1,0,0,0,{limit},7,1,0,0"  # one hard budget: reserve 7, no lease asked

    def call(n: int):
        return script(keys=keys, args=["e", "0", str(n), "", "", admission])

    first = call(1)
    assert first == [[], [0, -1, 8_999_999_999_999_130, 0]]
    assert call(1) == first  # the same call again: the first reply, nothing applied
    assert call(2) == [[], [0, -1, 8_999_999_999_999_137, 0]]
    with pytest.raises(redis.ResponseError, match="late copy"):
        call(1)
    assert int(r.get(budget)) == 8_999_999_999_999_137


async def _leased_beyond(url: str, key: str, used: int) -> int:
    """What the replica holds of `key` besides what it used, once a top-up landed (polled)."""
    deadline = time.monotonic() + 10
    while raw(url, key) <= used and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the sender's turn: the top-up
    held = raw(url, key) - used
    assert held > 0
    return held


@contextlib.asynccontextmanager
async def _twenty_admitted_and_leased(redis_server, monkeypatch):
    """A replica behind a proxy that can drop its script calls: 20 admissions of one key's rate, and a top-up
    held beyond them. Yields (the limiter, the proxy, the rate counter's key, what the replica holds)."""
    monkeypatch.setattr(counters_redis, "LEASE_IDLE_S", 3600.0)  # no idle give-back before close
    proxy = _DroppingProxy(int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    url = await proxy.start()
    (lim,) = await started(
        replicas(url, 1, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000)])
    )
    try:
        for i in range(20):
            await admit(lim, f"c{i}")
        key = f"{lim.cfg.key_prefix}r:key:ten_a:key_a:r:{int(lim.clock()) // 60}"
        yield lim, proxy, key, await _leased_beyond(redis_server.url, key, 20)
    finally:
        await proxy.close()


async def test_close_sends_a_failed_give_back_again(redis_server, monkeypatch):
    # close() gave up on its first failed call: the leases it was giving back stayed counted until the
    # window ended. The give-back call, its retry on a new connection and the next one are lost (Redis
    # never sees them); close sends the give-backs again until they land.
    async with _twenty_admitted_and_leased(redis_server, monkeypatch) as (lim, proxy, key, _):
        proxy.refuse = 3
        await lim.close()
        assert raw(redis_server.url, key) == 20, "the leases were not given back"
        assert proxy.refuse == 0  # (three script calls were lost on the way)


async def test_close_names_what_it_could_not_give_back(redis_server, caplog, monkeypatch):
    async with _twenty_admitted_and_leased(redis_server, monkeypatch) as (lim, proxy, key, held):
        proxy.refuse = 10**6  # Redis stays out of reach
        with caplog.at_level(logging.ERROR, logger="multihome.metering"):
            await lim.counters.close(timeout=1)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(f"{key} (-{held})" in m for m in errors), errors
        assert raw(redis_server.url, key) == 20 + held  # never reached Redis


def test_a_call_that_fails_partway_still_applies_its_settlements_once(redis_server):
    # Redis keeps what a script applied before an error. The settlement batch such a call carried is
    # recorded as applied, so the batch sent again with the next call is skipped, not added twice.
    r = redis.Redis.from_url(redis_server.url)
    p = f"t{uuid.uuid4().hex[:8]}:"
    settled, broken = f"{p}b:tenant:ten_a", f"{p}b:tenant:ten_b"
    r.set(f"{p}epoch", "e")
    r.set(settled, 100)
    r.set(broken, "not a number")
    script = r.register_script(ADMIT)
    deadline = int(time.time() * 1000) + 60_000
    keys = [f"{p}epoch", f"{p}s:x", settled, broken]
    args = ["e", "0", "1", "1,5", "", f"{deadline},1,0,0,0,1000,7,1,0,0"]
    for _ in range(2):  # the call, then a copy of it: the same error, nothing applied again
        with pytest.raises(redis.ResponseError):
            script(keys=keys, args=args)
    assert int(r.get(settled)) == 105
    assert script(keys=keys[:3], args=["e", "0", "2", "1,5", ""]) == [[]]  # the batch sent again
    assert int(r.get(settled)) == 105


def test_a_counter_that_cannot_take_its_settlement_does_not_stop_the_others(redis_server):
    # A settlement batch that met a key holding no integer used to stop there: the counters after it
    # never got theirs (the batch was recorded as applied, so sending it again skipped them).
    r = redis.Redis.from_url(redis_server.url)
    p = f"t{uuid.uuid4().hex[:8]}:"
    a, broken, b = f"{p}r:a", f"{p}r:broken", f"{p}r:b"
    r.set(f"{p}epoch", "e")
    r.mset({a: 10, broken: "not a number", b: 20})
    script = r.register_script(ADMIT)
    assert script(keys=[f"{p}epoch", f"{p}s:x", a, broken, b], args=["e", "0", "1", "1,-3,-3,-3", ""]) == [[]]
    assert (int(r.get(a)), r.get(broken), int(r.get(b))) == (7, b"not a number", 17)
