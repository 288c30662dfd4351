"""Leases of Redis counter capacity (counters_lease): most admissions need no script call, yet two
replicas never admit past a hard limit; reservations given back stay with the lease; close gives the
leases back; an emptied Redis drops them; a stalled Redis still admits what is leased; the switch off
restores one script call per admission."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
import redis

from multihome.config import parse_config
from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering import counters_redis
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering
from multihome.schema.errors import ApiError

from .conftest import NO_UPSTREAM, Dep, RedisServer, principal


@pytest.fixture(autouse=True)
def _no_idle_give_back(monkeypatch):
    """The idle give-back's turn (LEASE_IDLE_S) pushed out of these tests' way: a busy machine can pause a
    test past it, and a lease given back meanwhile is not what they check (one test restores it)."""
    monkeypatch.setattr(counters_redis, "LEASE_IDLE_S", 3600.0)


pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("same_minute")]
PRICES = PriceTable({"dep-a": DeploymentPrice.of(1.0, 2.0, None, "USD")})  # per 1M tokens
# Admitting 1000 prompt and 500 output tokens: (1250 + 16) x 1.0 + 500 x 2.0 per 1M
RESERVE = 2_266_000
COST = 1_000_000  # what each call costs in fact: 1000 prompt tokens, no output


def evalsha_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


def raw(url: str, key: str) -> int:
    """The counter as Redis holds it: what is used, reserved and leased by every replica."""
    return int(redis.Redis.from_url(url).get(key) or 0)


def leased_besides_use(url: str, key: str, used: int, lims: list[Limiter]) -> bool:
    """Every replica holds a lease of `key`, and Redis holds exactly what was used plus those leases."""
    held = [lim.counters.leases.held(key) for lim in lims]
    return all(held) and raw(url, key) == used + sum(held)


def replicas(url: str, n: int = 2, leases: bool = True, timeout_s: float = 2.0, **rules) -> list[Limiter]:
    cfg = MeteringConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:", **rules)
    now = (time.time() // 60) * 60 + 1  # one rate window throughout
    return [
        Limiter(cfg, PRICES, RedisCounters(url, timeout_s, prefix=cfg.key_prefix, leases=leases), lambda: now)
        for _ in range(n)
    ]


async def started(lims: list[Limiter]) -> list[Limiter]:
    for lim in lims:
        await lim.start()
        await lim.counters.claim()  # as Metering does at start, once it has seeded the counters
    return lims


async def admit(lim: Limiter, rid: str, **kw):
    try:
        return await lim.admit(principal(**kw), "g", [Dep("dep-a")], 1000, 500, rid)
    except ApiError as exc:
        assert exc.status == 429, exc
        return None


async def test_two_replicas_never_admit_past_a_rate_limit_and_can_use_all_of_it(redis_server):
    a, b = await started(
        replicas(redis_server.url, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1000)])
    )
    before = evalsha_calls(redis_server.url)
    admitted, key = 0, f"{a.cfg.key_prefix}r:key:ten_a:key_a:r:{int(a.clock()) // 60}"
    for round_ in range(150):  # 1,500 offered to each: more than the limit
        results = await asyncio.gather(*(admit((a, b)[i % 2], f"r{round_}-{i}") for i in range(20)))
        admitted += sum(t is not None for t in results)
        assert raw(redis_server.url, key) <= 1000  # used and leased together: never past the limit
    assert admitted <= 1000
    calls = evalsha_calls(redis_server.url) - before
    assert calls < admitted / 2, f"{calls} script calls for {admitted} admissions: leases were not used"
    # What either replica still holds goes back on drain; then the rest of the limit is admitted, exactly.
    for lim in (a, b):
        await lim.drain()
    for round_ in range(10):
        results = await asyncio.gather(*(admit((a, b)[i % 2], f"after{round_}-{i}") for i in range(20)))
        admitted += sum(t is not None for t in results)
    assert admitted == 1000
    for lim in (a, b):
        await lim.drain()
    assert raw(redis_server.url, key) == 1000
    for lim in (a, b):
        await lim.close()


async def test_two_replicas_spend_a_hard_budget_to_within_one_reservation_never_past_it(redis_server):
    amount = 50_000_000  # 0.05 USD: 50 calls at their cost, fewer at once at their reservation
    a, b = await started(replicas(redis_server.url, budgets=[BudgetRule(scope="tenant", id="ten_a", amount="0.05")]))
    spent, key, idle_rounds = 0, None, 0
    for round_ in range(200):
        results = await asyncio.gather(*(admit((a, b)[i % 2], f"r{round_}-{i}") for i in range(6)))
        tickets = [t for t in results if t is not None]
        for t in tickets:
            key = t.reserved[0][0]
            assert raw(redis_server.url, key) <= amount  # spend, reservations and leases: never past it
            t.settle(COST, "USD", 1000)
            spent += COST
        assert spent <= amount
        if not tickets:
            idle_rounds += 1
            if idle_rounds == 2:
                break
            for lim in (a, b):  # a replica holding an unused lease gives it back (as at shutdown)
                await lim.drain()
        else:
            idle_rounds = 0
    assert key is not None
    for lim in (a, b):
        await lim.drain()
    assert raw(redis_server.url, key) == spent
    assert amount - spent < RESERVE  # another call's reservation does not fit: the budget is spent
    for lim in (a, b):
        await lim.close()


async def test_most_admissions_at_steady_load_make_no_script_call(redis_server):
    (lim,) = await started(
        replicas(
            redis_server.url,
            1,
            budgets=[BudgetRule(scope="tenant", id="ten_a", amount=1000)],
            rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000, tokens_per_minute=10**9)],
        )
    )
    before = evalsha_calls(redis_server.url)
    for i in range(1000):  # one client calling in turn, each call settled before the next
        t = await admit(lim, f"s{i}")
        assert t is not None
        remaining = int(dict(t.headers)[b"x-ratelimit-remaining-requests"])
        assert remaining == 100_000 - (i + 1)  # one replica: its own count, leased or not
        t.settle(COST, "USD", 1000)
        if i % 50 == 0:
            await asyncio.sleep(0.001)  # a loop turn now and then, as between calls on a server
    calls = evalsha_calls(redis_server.url) - before
    assert calls < 100, f"{calls} script calls for 1,000 admissions"
    await lim.close()


async def test_an_admission_the_leases_cover_is_answered_at_once_and_a_miss_changes_nothing(redis_server):
    """The hot path asks `at_once` first: from the leases it answers without a coroutine (the call's
    ticket, headers and all); when they cannot cover the call it answers None and has counted nothing."""
    (lim,) = await started(
        replicas(
            redis_server.url,
            1,
            budgets=[BudgetRule(scope="tenant", id="ten_a", amount=1000)],
            rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1000)],
        )
    )
    assert lim.at_once(principal(), "g", [Dep("dep-a")], 1000, 500, "cold") is None  # nothing leased yet
    assert not lim.open
    warm = await admit(lim, "warm")  # through Redis: grants the leases
    before = evalsha_calls(redis_server.url)
    ticket = lim.at_once(principal(), "g", [Dep("dep-a")], 1000, 500, "leased")
    assert ticket is not None and lim.open["leased"] is ticket
    assert dict(ticket.headers)[b"x-ratelimit-remaining-requests"] == b"998"
    assert evalsha_calls(redis_server.url) == before
    leases = lim.counters.leases
    held = {key: leases.held(key) for key in leases.by_key}
    counted = {key: raw(redis_server.url, key) for key in leases.by_key}
    # A call whose tokens no lease covers (a reservation past the whole budget): None, nothing taken.
    assert lim.at_once(principal(), "g", [Dep("dep-a")], 10**9, 500, "too-big") is None
    assert "too-big" not in lim.open
    assert {key: leases.held(key) for key in leases.by_key} == held
    assert {key: raw(redis_server.url, key) for key in leases.by_key} == counted
    for t in (warm, ticket):
        t.settle(COST, "USD", 1000)
    await lim.close()


async def test_a_reservation_given_back_returns_to_the_lease_not_to_redis(redis_server):
    (lim,) = await started(
        replicas(redis_server.url, 1, rate_limits=[RateLimitRule(scope="key", id="*", tokens_per_minute=1_000_000)])
    )
    first = await admit(lim, "first")  # through Redis: a lease is granted besides
    key = first.reserved[0][0]
    leases = lim.counters.leases
    held = leases.held(key)
    assert held > 0
    in_redis, calls = raw(redis_server.url, key), evalsha_calls(redis_server.url)
    first.settle(0, "USD", 300)  # reserved 1,500 tokens (1000 prompt + 500 output), used 300
    assert leases.held(key) == held + 1_200
    await asyncio.sleep(0.1)  # past SETTLE_DELAY_S: nothing was due to Redis
    assert evalsha_calls(redis_server.url) == calls and raw(redis_server.url, key) == in_redis
    await lim.drain()  # gives the lease back: Redis then holds what was used
    assert raw(redis_server.url, key) == 300
    await lim.close()


async def test_close_gives_the_leases_back(redis_server):
    lims = await started(
        replicas(
            redis_server.url,
            budgets=[BudgetRule(scope="tenant", id="ten_a", amount=10)],
            rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=10_000)],
        )
    )
    tickets = [await admit(lims[i % 2], f"c{i}") for i in range(40)]
    for t in tickets:
        t.settle(COST, "USD", 1000)
    budget_key = tickets[0].reserved[0][0]
    requests_key = f"{lims[0].cfg.key_prefix}r:key:ten_a:key_a:r:{int(lims[0].clock()) // 60}"
    # An admission from a lease needs no loop turn, so the top-up it made due (below half the lease) goes
    # with the sender's next call, after the test's next await: a replica may have taken its last leased
    # unit and hold nothing yet. On a busy machine the measured rate is low, leases are a few admissions
    # long, and both replicas can be at that point after the 40th: wait for the top-ups to land.
    deadline = time.monotonic() + 10
    while not leased_besides_use(redis_server.url, requests_key, 40, lims) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert leased_besides_use(redis_server.url, requests_key, 40, lims)
    for lim in lims:
        await lim.close()
    assert raw(redis_server.url, budget_key) == 40 * COST
    assert raw(redis_server.url, requests_key) == 40


async def test_an_emptied_redis_drops_the_leases():
    server = RedisServer()
    (lim,) = replicas(server.url, 1, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1000)])
    try:
        await started([lim])
        first = await admit(lim, "a")
        assert dict(first.headers)[b"x-ratelimit-remaining-requests"] == b"999"
        assert lim.counters.leases.by_key
        server.stop()
        server = RedisServer(port=server.port)  # back empty
        # Until this replica's next script call, what it leased is admitted (docs/metering.md); a
        # settlement makes that call within SETTLE_DELAY_S, finds the counters gone, and drops the leases.
        lim.counters.adjust([("unrelated-key", 1)])
        deadline = time.monotonic() + 10
        while lim.counters.generation == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert lim.counters.generation == 1
        assert not lim.counters.leases.by_key
        after = await admit(lim, "b")  # through Redis again, into the re-made counter
        assert dict(after.headers)[b"x-ratelimit-remaining-requests"] == b"999"
    finally:
        await lim.close()
        server.stop()


async def test_a_stalled_redis_still_admits_what_is_leased():
    server = RedisServer()
    (lim,) = replicas(
        server.url, 1, timeout_s=0.3, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1000)]
    )
    try:
        await started([lim])
        await admit(lim, "warm")
        key = next(iter(lim.counters.leases.by_key))
        held = lim.counters.leases.held(key)
        assert held >= 4
        os.kill(server.popen.pid, signal.SIGSTOP)
        try:
            leased = [await admit(lim, f"stalled-{i}") for i in range(held)]
            assert all(b"x-multihome-limits" not in dict(t.headers) for t in leased)  # limited, from the lease
            beyond = await admit(lim, "beyond")  # nothing leased is left: the documented fallback
            assert dict(beyond.headers)[b"x-multihome-limits"] == b"unavailable"
        finally:
            os.kill(server.popen.pid, signal.SIGCONT)
    finally:
        await lim.close()
        server.stop()


async def test_leases_off_make_one_script_call_per_admission(redis_server):
    (lim,) = await started(
        replicas(
            redis_server.url,
            1,
            leases=False,
            rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=10_000)],
        )
    )
    assert lim.counters.leases is None
    before = evalsha_calls(redis_server.url)
    for i in range(50):
        await admit(lim, f"o{i}")
    assert evalsha_calls(redis_server.url) - before == 50
    await lim.close()


def test_the_switch_is_on_by_default_and_reaches_the_counters(monkeypatch):
    monkeypatch.setenv("LEASE_TEST_REDIS", "redis://127.0.0.1:9/0")  # never connected to here
    config = NO_UPSTREAM + "metering:\n  redis_url_env: LEASE_TEST_REDIS\n"
    assert Metering.from_config(parse_config(config)).limiter.counters.leases is not None
    off = Metering.from_config(parse_config(config + "  redis_leases: false\n"))
    assert off.limiter.counters.leases is None


async def test_a_lease_nothing_takes_from_is_given_back(redis_server, monkeypatch):
    monkeypatch.setattr(counters_redis, "LEASE_IDLE_S", 1.0)  # the real turn (the other tests have none)
    # A replica that stops getting calls would hold its leases until the window or period ends, and the
    # other replicas be refused for them: one that no admission took from for LEASE_IDLE_S goes back.
    (lim,) = await started(
        replicas(redis_server.url, 1, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1000)])
    )
    await admit(lim, "only")
    key = f"{lim.cfg.key_prefix}r:key:ten_a:key_a:r:{int(lim.clock()) // 60}"
    assert raw(redis_server.url, key) > 1  # one admission, and its lease
    deadline = time.monotonic() + 10
    while raw(redis_server.url, key) != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert raw(redis_server.url, key) == 1 and lim.counters.leases.held(key) == 0
    await lim.close()


async def test_deployment_alternatives_admit_from_the_first_groups_lease_then_fall_to_the_next(redis_server):
    # Only the first deployment can be decided from leases (Redis charges the first that fits); once its
    # limit is used up, admissions go to Redis, which charges the next one, as without leases. (A limit of
    # fewer than 256 admissions gets no lease at all: counters_lua.)
    (lim,) = await started(
        replicas(
            redis_server.url, 1, rate_limits=[RateLimitRule(scope="deployment", id="d1", requests_per_minute=1000)]
        )
    )
    plan = [Dep("d1"), Dep("d2")]
    before = evalsha_calls(redis_server.url)
    charged = []
    for i in range(1100):
        t = await lim.admit(principal(), "g", plan, 10, 10, f"g{i}")
        charged.append(t.deployment)
        if i % 10 == 0:
            await asyncio.sleep(0.001)  # the sender's turn: top-ups
    assert charged[:1000] == ["d1"] * 1000 and charged[1000:] == ["d2"] * 100
    calls = evalsha_calls(redis_server.url) - before
    # Leases until 256 admissions are left (then each goes to Redis, as do the 100 charged to d2).
    assert calls < 600, f"{calls} script calls for 1,100 admissions"
    await lim.drain()
    key = f"{lim.cfg.key_prefix}r:deployment:d1:r:{int(lim.clock()) // 60}"
    assert raw(redis_server.url, key) == 1000
    await lim.close()


async def test_a_lowered_limit_applies_at_the_next_admission_though_a_lease_is_held(redis_server):
    from multihome.metering.rules import Rules

    (lim,) = await started(
        replicas(redis_server.url, 1, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1000)])
    )
    await admit(lim, "before")
    assert any(e.left for e in lim.counters.leases.by_key.values())  # granted under 1,000 a minute
    lowered = MeteringConfig(
        key_prefix=lim.cfg.key_prefix, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1)]
    )
    lim.use_rules(Rules(lowered))
    assert await admit(lim, "after") is None  # refused: the one admitted already is the new limit
    await lim.close()


async def test_leases_are_granted_again_after_a_drain(redis_server):
    (lim,) = await started(
        replicas(redis_server.url, 1, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000)])
    )
    for round_ in range(3):
        for i in range(20):  # enough to leave top-ups due when the drain comes
            await admit(lim, f"d{round_}-{i}")
        await lim.drain()
        assert not any(e.left for e in lim.counters.leases.by_key.values())
    await admit(lim, "again")  # through Redis, which grants a lease again
    assert any(e.left for e in lim.counters.leases.by_key.values())
    await lim.close()
