"""A call that asks for a `service_tier` is charged at that tier's price (`price.tiers`), so admission reserves
at it too: reserved at the default price, a hard budget could be overshot by the tier's difference on one call."""

from __future__ import annotations

import time
import uuid

import pytest

from multihome.accounting.tracker import Accounting
from multihome.config.metering import BudgetRule, MeteringConfig
from multihome.config.model import TierPrice
from multihome.metering.counters import LocalCounters
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.schema.errors import ApiError

from .conftest import Dep, principal

pytestmark = pytest.mark.anyio

# priority costs ten times the default price
PRICES = PriceTable(
    {"dep-a": DeploymentPrice.of(1.0, 2.0, None, "USD", {"priority": TierPrice(input=10.0, output=20.0)})}
)
# (ceil(1000 * 1.25) + 16) prompt tokens and 500 output tokens, per 1M tokens, in nanos:
AT_DEFAULT = 1266 * 1_000 + 500 * 2_000  # 2_266_000
AT_PRIORITY = 1266 * 10_000 + 500 * 20_000  # 22_660_000


@pytest.fixture(params=["local", "redis"])
def counters(request):
    if request.param == "local":
        return LocalCounters()
    return RedisCounters(request.getfixturevalue("redis_server").url, timeout_s=30.0)


async def _limiter(counters, amount: str) -> Limiter:
    cfg = MeteringConfig(
        key_prefix=f"t{uuid.uuid4().hex[:8]}:", budgets=[BudgetRule(scope="tenant", id="ten_a", amount=amount)]
    )
    lim = Limiter(cfg, PRICES, counters, time.time)
    await lim.start()
    return lim


async def test_a_tiered_call_reserves_at_the_tier_price(counters):
    lim = await _limiter(counters, "1")
    try:
        plan = [Dep("dep-a")]
        plain = await lim.admit(principal(), "g", plan, 1000, 500, "r1")
        tiered = await lim.admit(principal(), "g", plan, 1000, 500, "r2", tier="priority")
        same = await lim.admit(principal(), "g", plan, 1000, 500, "r3", tier="default")
        assert plain.reserved[0][1] == AT_DEFAULT
        assert tiered.reserved[0][1] == AT_PRIORITY
        assert same.reserved[0][1] == AT_DEFAULT
    finally:
        await lim.close()


async def test_a_hard_budget_refuses_a_tiered_call_its_tier_price_would_overshoot(counters):
    # Room for the call at the default price, not at priority's.
    lim = await _limiter(counters, "0.01")
    try:
        with pytest.raises(ApiError) as refused:
            await lim.admit(principal(), "g", [Dep("dep-a")], 1000, 500, "r1", tier="priority")
        assert refused.value.body.code == "budget_exceeded"
        assert (await lim.admit(principal(), "g", [Dep("dep-a")], 1000, 500, "r2")).reserved[0][1] == AT_DEFAULT
    finally:
        await lim.close()


async def test_the_tracker_reserves_at_the_tier_the_call_asked_for():
    # The front door sets the tracker's tier before admission (api/pipeline.py).
    from types import SimpleNamespace

    lim = await _limiter(LocalCounters(), "1")
    try:
        tracker = Accounting(limiter=lim).begin("r1", "chat", principal(), b"{}", "g")
        assert tracker is not None
        tracker.tier = "priority"
        tracker.admit_at_once(SimpleNamespace(name="g", fallback_deployments=(), answers=1), [Dep("dep-a")], 500)
        assert tracker.ticket is not None
        (_, reserved), *_ = tracker.ticket.reserved
        assert reserved > AT_DEFAULT  # the prompt estimate of no request is 0 tokens: 16 at 10, 500 at 20
        assert reserved == 16 * 10_000 + 500 * 20_000
    finally:
        await lim.close()
