"""The usual shape's admission from this process's Redis leases (one hard budget, one requests- and one
tokens-per-minute limit), written out once per shape (limiter `_usual_leased`, RedisCounters.admit_usual,
Leases.take_usual), admits, reserves, heads the answer and takes from the leases exactly as the general
shared path does (`_planned`, RedisCounters.admit_now, Leases.take, `_conclude`), and misses (None,
nothing taken) where it misses; and RedisCounters.adjust2, written out, settles as `adjust` does."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering import counters_lease, counters_redis
from multihome.metering import limiter as limiter_module
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable

from .conftest import Dep, principal

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("same_minute")]
PRICES = PriceTable({"dep-a": DeploymentPrice.of(1.5, 7.0, None, "USD")})


@pytest.fixture(autouse=True)
def _quiet_leases(monkeypatch):
    # Big first grants (sized without a rate yet: _MIN_CALLS increments), so the leases cover many calls
    # without a top-up; and no idle give-back during the test.
    monkeypatch.setattr(counters_lease, "_MIN_CALLS", 40)
    monkeypatch.setattr(counters_redis, "LEASE_IDLE_S", 3600.0)


def _limiter(url: str, budget: str, rpm: int, tpm: int) -> Limiter:
    cfg = MeteringConfig(
        key_prefix=f"u{uuid.uuid4().hex[:8]}:",
        budgets=[BudgetRule(scope="key", id="*", amount=budget, mode="hard")],
        rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=rpm, tokens_per_minute=tpm)],
    )
    now = (time.time() // 60) * 60 + 1  # one rate window throughout
    return Limiter(cfg, PRICES, RedisCounters(url, prefix=cfg.key_prefix), lambda: now)


def _state(lim: Limiter) -> tuple:
    """The leases and the settlements not sent, by counter name less the limiter's own prefix."""
    counters = lim.counters
    assert isinstance(counters, RedisCounters) and counters.leases is not None
    cut = len(lim.cfg.key_prefix)
    leases = {
        k[cut:]: (e.left, e.used, e.base, e.incr, e.want, e.limit, e.asking, e.taken, e.hits)
        for k, e in counters.leases.by_key.items()
    }
    return leases, sorted(k[cut:] for k in counters.leases.due), {k[cut:]: d for k, d in counters._pending.items()}


def _unprefixed(lim: Limiter, reserved: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(k[len(lim.cfg.key_prefix) :], v) for k, v in reserved]


@pytest.mark.parametrize(
    ("budget", "rpm", "tpm", "warm_out"),  # warm_out: the first call's max tokens, which sizes the first grants
    [
        ("1000", 10_000_000, 10**12, 2000),
        ("0.4", 10_000_000, 10**12, 50),
        ("1000", 400, 10**12, 2000),
        ("1000", 10_000, 40_000, 50),
    ],
    ids=["roomy", "tight-budget", "tight-requests", "tight-tokens"],
)
async def test_the_usual_leased_admission_is_the_general_one(redis_server, monkeypatch, budget, rpm, tpm, warm_out):
    usual, general = _limiter(redis_server.url, budget, rpm, tpm), _limiter(redis_server.url, budget, rpm, tpm)
    for lim in (usual, general):
        await lim.start()
        await lim.counters.claim()
    p, plan = principal(key_id="key_a"), [Dep("dep-a")]
    await usual.admit(p, "g", plan, 100, warm_out, "warm")  # through Redis: grants the leases
    with monkeypatch.context() as m:
        m.setattr(limiter_module, "_usual_leased", lambda *args: None)  # its shapes take the general path
        await general.admit(p, "g", plan, 100, warm_out, "warm")
    ((shape,),) = [list(lim._shapes.values()) for lim in (usual,)]
    assert shape.usual is not None  # the path under test is the one taken
    assert [s.usual for s in general._shapes.values()] == [None]
    assert _state(usual) == _state(general)
    rng = random.Random(f"{budget}/{rpm}/{tpm}")
    held: list = []
    taken = missed = 0
    for n in range(120):  # no await in between: no top-up or settlement reaches Redis meanwhile
        prompt, max_out, choices = rng.randint(0, 300), rng.choice([None, rng.randint(1, 200)]), rng.randint(1, 2)
        a = usual.at_once(p, "g", plan, prompt, max_out, f"c{n}", choices)
        b = general.at_once(p, "g", plan, prompt, max_out, f"c{n}", choices)
        assert (a is None) == (b is None), n
        if a is None:
            missed += 1
            usual._missed = general._missed = None  # not gone on with through Redis
        else:
            assert b is not None
            taken += 1
            assert a.headers == b.headers
            assert _unprefixed(usual, a.reserved) == _unprefixed(general, b.reserved)
            assert (a.gen, a.deployment, a.skip, a.over_budget) == (b.gen, b.deployment, b.skip, b.over_budget)
            assert usual.open[f"c{n}"] is a and general.open[f"c{n}"] is b
            held.append((a, b))
        if held and rng.random() < 0.5:
            a, b = held.pop(rng.randrange(len(held)))
            cost, tokens = rng.randint(0, 400_000), rng.randint(0, 400)
            assert a.settle(cost, "USD", tokens) and b.settle(cost, "USD", tokens)
        assert _state(usual) == _state(general), n
    assert taken  # the leases covered calls ...
    if budget == "0.4" or rpm == 400 or tpm == 40_000:
        assert missed  # ... and the tight ones ran short
    for a, b in held:
        a.settle(0, "USD", 0)
        b.settle(0, "USD", 0)
    await usual.close()
    await general.close()


async def test_adjust2_settles_as_adjust_does(redis_server):
    a, b = (RedisCounters(redis_server.url, prefix=f"v{uuid.uuid4().hex[:8]}:") for _ in range(2))
    assert a.leases is not None and b.leases is not None
    for counters in (a, b):  # a lease on "x" (ready, 100 left), none on "y"
        e = counters.leases.by_key["x"] = counters_lease.Lease(10_000, 50, 0, False)
        e.ready, e.left, e.want = True, 100, 200
    rng = random.Random(7)
    for _ in range(200):
        d1, d2 = rng.randint(-300, 300) * rng.randint(0, 1), rng.randint(-300, 300)
        k1, k2 = rng.choice([("x", "y"), ("y", "x"), ("x", "z")])
        a.adjust2(k1, d1, k2, d2)
        b.adjust(((k1, d1), (k2, d2)))
        assert a._pending == b._pending
        assert [(e.left, e.used) for e in a.leases.by_key.values()] == [
            (e.left, e.used) for e in b.leases.by_key.values()
        ]
    for counters in (a, b):
        counters._pending.clear()
        counters.leases.by_key.clear()
        await counters.close()
