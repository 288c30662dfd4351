"""Prices: exact Decimal costs, cached-token pricing, versions that change with the table."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from builders import NOWHERE, config, deployment, group, open_door, price, provider, typed
from multihome.accounting.record import Usage
from multihome.metering.prices import (
    EXACT_BELOW,
    DeploymentPrice,
    PriceTable,
    exact_text,
    reserve_nanos,
    text,
    to_nanos,
)


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


# -- exact integer pricing: the Decimal arithmetic is the reference, bit for bit ---------------------

_config_price = st.floats(min_value=0, max_value=1_000_000, allow_nan=False, allow_infinity=False)
# Any finite non-negative Decimal text, from 1E-40 to 9.99E+20: exponents the config never makes too.
_any_price = st.builds(lambda digits, exp: f"{digits}E{exp}", st.integers(0, 10**20), st.integers(-40, 5))
_tokens = st.integers(min_value=-5, max_value=10**12)


def _same_as_decimal(price: DeploymentPrice, usage: Usage) -> None:
    ref = price.cost(usage)
    units, nanos, cost_text = price.charge(usage)
    assert nanos == to_nanos(ref)
    assert cost_text == text(ref)
    assert price.charged(usage) == (units, nanos, cost_text)  # the general method, for every price
    made = price.decimal(usage, units)
    assert made.as_tuple() == ref.as_tuple() and str(made) == str(ref), (made, ref)
    assert price.amount(usage, units) == float(ref)  # metrics' cost: the double nearest the exact cost


@settings(max_examples=3000, deadline=None)
@given(_config_price, _config_price, st.none() | _config_price, _tokens, _tokens, _tokens)
def test_integer_cost_is_the_decimal_cost_for_config_prices(i, o, c, prompt, completion, cached):
    price = DeploymentPrice.of(i, o, c, "USD")
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    if max(prompt, completion) <= 10**9 and price.exp >= -12:  # realistic: the integer path, no fallback
        assert price.units(usage) < EXACT_BELOW
    _same_as_decimal(price, usage)


@settings(max_examples=3000, deadline=None)
@given(_any_price, _any_price, st.none() | _any_price, _tokens, _tokens, _tokens)
def test_integer_cost_is_the_decimal_cost_for_any_prices_and_past_the_precision(i, o, c, prompt, completion, cached):
    """Digits and exponents far past any config (the totals above 10**28, where the Decimal context
    rounds, take the Decimal path inside `charge`)."""
    _same_as_decimal(
        DeploymentPrice.of(i, o, c, "EUR"),
        Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached),
    )


@settings(max_examples=3000, deadline=None)
@given(st.integers(0, 10**27), st.integers(-60, 20))
def test_exact_text_is_the_decimal_text(units, exp):
    assert exact_text(units, exp) == text(Decimal(units).scaleb(exp))


def test_the_decimal_path_is_taken_where_decimal_rounds():
    price = DeploymentPrice.of("1E-30", "123456789.123", None, "USD")
    usage = Usage(prompt_tokens=10**12, completion_tokens=10**12)
    assert price.units(usage) >= EXACT_BELOW
    ref = price.cost(usage)
    assert Fraction(ref) != Fraction(price.units(usage), 10 ** (6 - price.exp)), "the Decimal context rounded it"
    _same_as_decimal(price, usage)
    # The bench's and the tests' usual prices: the integer path, the same text and nanos.
    bench = DeploymentPrice.of(1.0, 2.0, None, "USD")
    assert bench.charge(Usage(prompt_tokens=25, completion_tokens=80)) == (1850, 185_000, "0.000185")
