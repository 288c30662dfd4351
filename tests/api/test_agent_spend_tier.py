"""An agent run's spend (the `max_spend` cap's count) is priced as the run's calls are charged: at the
price of the `service_tier` the request asked for, where its deployment declares one (docs/metering.md
"Service tiers"). At the default price a priority run would pass its cap by the tiers' difference."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from multihome.api.responses.agent import AgentRun, Journal
from multihome.metering.prices import DeploymentPrice, PriceTable

USAGE = {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "input_tokens_details": {"cached_tokens": 0}}


def _spent(tier: str | None) -> Decimal:
    tiers = {"priority": SimpleNamespace(input=4, output=16, cached_input=None)}
    prices = PriceTable({"dep": DeploymentPrice.of(2, 8, None, "USD", tiers)})
    run = object.__new__(AgentRun)  # only what `_add_usage` reads
    run.prices, run.journal, run.req = prices, Journal(), SimpleNamespace(service_tier=tier)
    run._add_usage(
        dict(USAGE, input_tokens_details={"cached_tokens": 0}), SimpleNamespace(deployment=SimpleNamespace(name="dep"))
    )
    return Decimal(run.journal.spent)


def test_a_run_s_spend_is_counted_at_the_price_of_its_service_tier():
    assert _spent(None) == Decimal(10)
    assert _spent("default") == Decimal(10)
    assert _spent("priority") == Decimal(20)
