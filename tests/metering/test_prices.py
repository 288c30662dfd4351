"""Prices: exact Decimal costs, cached-token pricing, versions that change with the table."""

from __future__ import annotations

from decimal import Decimal

from builders import NOWHERE, config, deployment, group, open_door, price, provider, typed
from multihome.accounting.record import Usage
from multihome.metering.prices import DeploymentPrice, PriceTable, reserve_nanos, to_nanos


def table(a_in: float = 2.5) -> PriceTable:
    cfg = config(
        server=open_door(),
        providers={"p": provider("openai", NOWHERE)},
        deployments={
            "a": deployment("p", "a", price=price(a_in, 10.0, cached_input=1.25)),
            "b": deployment("p", "b", price=price(0.15, 0.6, currency="EUR")),
            "free": deployment("p", "free"),
        },
        model_groups={"g": group("a", "b", "free")},
    )
    return PriceTable.from_config(typed(cfg))


def test_costs_are_exact_decimals_not_floats():
    prices = table()
    cost, currency = prices.cost("b", Usage(prompt_tokens=1, completion_tokens=0))
    assert (cost, currency) == (Decimal("0.00000015"), "EUR")  # a float would give 1.4999999999999999e-07
    # 10 million calls of 1 prompt token each: exactly 1.50 EUR, to the cent and beyond.
    assert sum([cost] * 10_000_000, Decimal(0)) == Decimal("1.5")
    assert sum([0.15 / 1e6] * 1_000_000) != 0.15  # summing floats drifts


def test_cached_tokens_use_cached_price_else_input_price():
    prices = table()
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=100_000, cached_tokens=400_000)
    cost, _ = prices.cost("a", usage)
    assert cost == Decimal("600000") * Decimal("2.5") / 10**6 + Decimal("0.5") + Decimal("1")  # 1.5 + 0.5 + 1.0
    assert cost == Decimal("3.0")
    no_cached_price, _ = prices.cost("b", usage)  # b has no cached_input: cached tokens pay input price
    assert no_cached_price == Decimal("0.15") + Decimal("0.06")


def test_unpriced_deployment_and_missing_usage_cost_nothing():
    prices = table()
    assert prices.cost("free", Usage(prompt_tokens=10))[0] == 0
    assert prices.cost("a", None)[0] == 0
    assert prices.cost(None, Usage(prompt_tokens=10))[0] == 0


def test_version_is_a_hash_of_the_table_and_changes_with_any_price():
    assert table().version == table().version
    assert table().version != table(2.50001).version
    assert table().version.startswith("pv_")
    assert '"input":"2.5"' in table().canonical  # str(float) -> Decimal, no binary noise


def test_nanos_round_half_even_and_reservation_rounds_up():
    assert to_nanos(Decimal("0.0000000025")) == 2 and to_nanos(Decimal("0.0000000035")) == 4
    price = DeploymentPrice.of(0.15, 0.6, None, "USD")
    # 1000 prompt + 500 output tokens: 0.00015 + 0.0003 = 0.00045 -> 450000 nanos, exactly.
    assert reserve_nanos(1000, price.in_micro, 500, price.out_micro) == 450_000
    odd = DeploymentPrice.of(0.0000001, 0, None, "USD")  # below a micro-unit: rounded up, never down
    assert reserve_nanos(1, odd.in_micro, 0, 0) == 1
