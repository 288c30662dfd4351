"""A call may be served by a deployment of its group's fallback groups (routing/router.py), and is then charged
at that deployment's price. So admission reserves at the dearest price (and the largest output cap) of those
too: reserved at its own group's prices only, a call falling back to a dearer deployment could take a hard
budget past its amount by the difference (docs/metering.md "Budgets")."""

from __future__ import annotations

import time
import uuid

import pytest

from builders import config, deployment, group, open_door, price, provider, typed
from multihome.accounting.tracker import Accounting
from multihome.config.metering import BudgetRule, MeteringConfig
from multihome.metering.counters import LocalCounters
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import PriceTable
from multihome.routing.catalog import Catalog
from multihome.schema.errors import ApiError

from .conftest import principal

pytestmark = pytest.mark.anyio

CFG = typed(
    config(
        providers={"p": provider("openai", "http://127.0.0.1:9/v1")},
        deployments={
            "cheap": deployment("p", "m", price=price(1, 2)),
            "dear": deployment("p", "m", price=price(10, 20), max_output_tokens=8000),
            "other": deployment("p", "m", price=price(1, 2)),
        },
        model_groups={"g": group("cheap", fallback_groups=["h"]), "h": group("dear", "cheap"), "k": group("other")},
        server=open_door(),
    )
)
PRICES = PriceTable.from_config(CFG)
# (ceil(1000 * 1.25) + 16) prompt tokens and 500 output tokens, per 1M tokens, in nanos:
AT_CHEAP = 1266 * 1_000 + 500 * 2_000


def test_a_group_knows_the_deployments_it_may_fall_back_to():
    groups = Catalog(CFG).groups
    assert [d.name for d in groups["g"].fallback_deployments] == ["dear"]  # (cheap is its own)
    assert groups["h"].fallback_deployments == () and groups["k"].fallback_deployments == ()


@pytest.fixture(params=["local", "redis"])
async def budget(request):
    """A limiter with a hard tenant budget of the amount asked for (`await budget(amount)`)."""
    made: list[Limiter] = []

    async def make(amount: str) -> Limiter:
        counters = (
            LocalCounters()
            if request.param == "local"
            else RedisCounters(request.getfixturevalue("redis_server").url, timeout_s=30.0)
        )
        cfg = MeteringConfig(
            key_prefix=f"t{uuid.uuid4().hex[:8]}:", budgets=[BudgetRule(scope="tenant", id="ten_a", amount=amount)]
        )
        lim = Limiter(cfg, PRICES, counters, time.time)
        await lim.start()
        made.append(lim)
        return lim

    yield make
    for lim in made:
        await lim.close()


async def test_the_tracker_reserves_at_the_fallback_groups_prices_too(budget):
    limiter = await budget("1")
    groups = Catalog(CFG).groups
    # No request: a prompt of 0 tokens, so 16 reserved (the prompt reserve's extra) and 500 output tokens.
    for rid, name, reserved in [("r1", "g", 16 * 10_000 + 500 * 20_000), ("r2", "k", 16 * 1_000 + 500 * 2_000)]:
        tracker = Accounting(limiter=limiter).begin(rid, "chat", principal(), b"{}", name)
        assert tracker is not None
        g = groups[name]
        await tracker.admit(g, g.deployments, 500)
        assert tracker.ticket is not None
        assert tracker.ticket.reserved[0][1] == reserved


async def test_a_hard_budget_refuses_a_call_its_fallback_price_would_overshoot(budget):
    limiter = await budget("0.02")
    g = Catalog(CFG).groups["g"]
    # Room for the call at its own group's price (0.0023 of 0.02), not at its fallback's (0.0227).
    with pytest.raises(ApiError) as refused:
        await limiter.admit(principal(), "g", g.deployments, 1000, 500, "r1", also=g.fallback_deployments)
    assert refused.value.body.code == "budget_exceeded"
    assert (await limiter.admit(principal(), "g", g.deployments, 1000, 500, "r2")).reserved[0][1] == AT_CHEAP


async def test_without_max_tokens_the_fallbacks_output_cap_is_reserved(budget):
    limiter = await budget("1")
    g = Catalog(CFG).groups["g"]
    ticket = await limiter.admit(principal(), "g", g.deployments, 0, None, "r1", also=g.fallback_deployments)
    # The dear deployment may write 8,000 tokens (more than the default cap, 4,096) at its output price.
    assert ticket.reserved[0][1] == 16 * 10_000 + 8000 * 20_000
