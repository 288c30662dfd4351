"""Adversarial cases of the Redis counter leases (counters_lease), each against a real Redis: a grant
in flight when a limit was lowered, leases of keys that stopped calling, a counter first admitted with
nothing to reserve on it, an admission given up before it was sent, and (not fixed: a strict xfail) a
script call retried on a dead connection after Redis ran it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
import redis

from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.rules import Rules

from .conftest import Dep, RedisServer, principal
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


class _DroppingProxy:
    """A TCP proxy to Redis that, when armed, drops the next reply and closes that connection (Redis ran
    the command; the client sees a dead connection)."""

    def __init__(self, port: int) -> None:
        self.port, self.armed, self.dropped = port, False, 0
        self.writers: list = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_w]

        async def pump(src, dst, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    if replies and self.armed:
                        self.armed, self.dropped = False, self.dropped + 1
                        writer.close()
                        up_w.close()
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w, False), pump(up_r, writer, True))

    async def close(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await asyncio.sleep(0.05)  # the pumps see their connections end


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: a retried script call is not idempotent (counters_redis._call; see the lease-review report)",
)
async def test_a_call_retried_on_a_dead_connection_after_redis_ran_it_is_not_counted_twice(redis_server):
    # _call sends a call again once on a new connection when the first died. If Redis had run it, its
    # admissions and grants were applied twice: one copy's reservation and grant stay counted.
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
