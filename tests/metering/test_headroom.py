"""Budget and rate-limit headroom for the metrics scrape: what admissions left, per rule and id,
in process and through a real Redis (the same counters the limiter admits against)."""

from __future__ import annotations

import pytest

from multihome.config.metering import BudgetRule, RateLimitRule
from multihome.metering.headroom import headroom

from .conftest import Dep, principal
from .test_limiter import _now_is_near_real_time, counters_factory, limiter  # noqa: F401  # its fixtures (a clock near real time: Redis expires keys in real time)

pytestmark = pytest.mark.anyio


async def test_headroom_is_what_admissions_left(counters_factory):  # noqa: F811
    lim = await limiter(
        counters_factory,
        budgets=[
            BudgetRule(scope="tenant", id="*", amount="1", period="day"),
            BudgetRule(scope="key", id="key_a", amount="2"),
            BudgetRule(scope="team", id="*", amount="3"),  # each team: ids unknown until used, not exported
        ],
        rate_limits=[
            RateLimitRule(scope="tenant", id="ten_a", requests_per_minute=10, tokens_per_minute=5000),
            RateLimitRule(scope="deployment", id="*", requests_per_minute=7),  # not exported either
        ],
    )
    budgets, rates = await headroom(lim, ["ten_a", "ten_b"])
    # A rule naming a key is read in each tenant: the key's counter is its tenant's own.
    assert dict(budgets) == {
        ("tenant", "ten_a", "day", "USD", "ten_a"): 1.0,
        ("tenant", "ten_b", "day", "USD", "ten_b"): 1.0,
        ("key", "key_a", "month", "USD", "ten_a"): 2.0,
        ("key", "key_a", "month", "USD", "ten_b"): 2.0,
    }
    assert dict(rates) == {("tenant", "ten_a", "requests", "ten_a"): 10, ("tenant", "ten_a", "tokens", "ten_a"): 5000}
    # One call of ten_a / key_a reserves its worst case: 1000 prompt + 100 output tokens at dep-a's prices.
    await lim.admit(principal(), "g", [Dep("dep-a")], 1000, 100, "r1")
    budgets, rates = await headroom(lim, ["ten_a", "ten_b"])
    left = dict(budgets)
    reserved = 1.0 - left[("tenant", "ten_a", "day", "USD", "ten_a")]
    assert reserved > 0 and left[("key", "key_a", "month", "USD", "ten_a")] == pytest.approx(2.0 - reserved)
    assert left[("tenant", "ten_b", "day", "USD", "ten_b")] == 1.0
    assert left[("key", "key_a", "month", "USD", "ten_b")] == 2.0  # ten_b's key_a: nothing spent
    assert dict(rates)[("tenant", "ten_a", "requests", "ten_a")] == 9
    assert dict(rates)[("tenant", "ten_a", "tokens", "ten_a")] < 5000
    await lim.close()


async def test_no_rules_read_nothing(counters_factory):  # noqa: F811
    lim = await limiter(counters_factory)
    assert await headroom(lim, ["ten_a"]) == ([], [])
    await lim.close()
