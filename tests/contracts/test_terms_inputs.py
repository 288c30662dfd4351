"""Contract terms an operator (config) or an org-admin (admin API) sets, at their edges: a rate or an
amount whose accruals the ledger could not keep exact is refused, naming the contract and the field,
in the config and in the admin API alike (`config.contracts.problems`)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from multihome.config.contracts import ContractsConfigError, encode_agreement, parse_contracts
from multihome.contracts import money, terms

HUNDRED_DIGITS = "0." + "1" * 100


def _rs(**fields) -> dict:
    return {
        "revenue_share": [{"id": "rs", "rate": "0.175", "starts_on": "2026-01-01", "ends_on": "2026-12-31", **fields}]
    }


def _commit(**fields) -> dict:
    c = {"id": "c", "provider": "p", "amount": "1000", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}
    return {"commitments": [{**c, **fields}]}


@pytest.mark.parametrize(
    ("section", "words"),
    [
        # Its products had 100+ digits, rounded to the 60-digit context: the accruals no longer summed to
        # rate x the sum of the costs.
        (_rs(rate=HUNDRED_DIGITS), "rate has more than 18 decimal places"),
        (_rs(rate="1E-400"), "rate has more than 18 decimal places: 1E-400"),
        (_rs(rate="0.1234567890123456789"), "rate has more than 18 decimal places"),
        (_rs(cap=HUNDRED_DIGITS), "cap has more than 9 decimal places"),
        # Underflowed the context to 0: never reached, every accrual clipped to 0 while the report said accruing.
        (_rs(cap="1E-1000000000"), "cap has more than 9 decimal places"),
        (_commit(amount="0.0000000001"), "amount has more than 9 decimal places"),
        (_commit(amount="1E-1000000000"), "amount has more than 9 decimal places"),
    ],
)
def test_a_rate_or_amount_the_ledger_cannot_keep_exact_is_refused(section, words):
    with pytest.raises(ContractsConfigError) as info:
        parse_contracts(section)
    message = str(info.value)
    assert message.startswith("contracts.") and words in message, message
    assert "1" * 65 not in message  # a client value is echoed to 64 characters at most


@pytest.mark.parametrize(
    "section",
    [
        _rs(rate="0.123456789012345678"),  # 18 places
        _rs(rate="1", cap="1E+15"),
        _rs(rate="0", cap="0"),
        _rs(cap="250000.000000000"),  # trailing zeros are no places
        _commit(amount="0.000000001"),
    ],
)
def test_rates_and_amounts_at_the_bounds_are_taken(section):
    parse_contracts(section)


def test_accruals_at_the_finest_rate_sum_to_rate_times_the_costs_exactly():
    """The finest rate the terms take, on costs as fine as metering makes (1e-6 and finer): the sum of
    the accruals is rate x the sum of the bases exactly, so a report's cents are the exact total's."""
    cfg = parse_contracts(_rs(rate="0.175000000000000001"))
    [a] = cfg.revenue_share
    costs = [Decimal("0.000001"), Decimal("0.0000025"), Decimal("12.3456789012345678901"), Decimal("1E-13")] * 250
    accrued = money.total(terms.requested(a, c) for c in costs)
    assert accrued == money.mul(a.rate, money.total(costs))
    assert terms.accrues(a, "t", "g", "p", "USD", dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp())
    assert not terms.accrues(a, "t", "g", "p", "USD", dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize("when", ["2026-12-31T23:59:59+05:00", "2026-12-31 23:59:59", "2026-12-31T00:00:00Z"])
def test_a_term_given_as_a_time_is_refused_saying_it_is_a_whole_utc_day(when):
    """YAML reads an unquoted time as a datetime: taken, its date would be the local one (23:59:59+05:00 is
    18:59:59Z); it is refused, naming the key and saying what to write."""
    from multihome.config import ConfigError, parse_config

    text = (
        "server: {api_keys_env: [K]}\nproviders: {p: {kind: openai, endpoint: 'http://127.0.0.1:9'}}\ndeployments: {d: {provider: p, model: m}}\n"
        "model_groups: {g: {deployments: [d]}}\nstorage: {url: 'sqlite+aiosqlite:///x.db'}\n"
        f"contracts: {{revenue_share: [{{id: rs, rate: '0.1', starts_on: 2026-01-01, ends_on: {when}}}]}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    [problem] = info.value.problems
    assert problem.startswith(
        "contracts.revenue_share[0].ends_on: Expected `date`, got `datetime`: a date here is a whole UTC day"
    )
    parse_config(text.replace(when, "2026-12-31"))


@pytest.mark.parametrize("zero", ["-0", "-0.0", "-0e3"])
def test_a_rate_or_cap_of_negative_zero_is_zero_everywhere_it_is_written(zero):
    """0 is a rate and a cap (nothing accrues); "-0" is that value, written "0" in the stored spec, the answer
    and the report's limit (which read "-0.00"). A commitment's amount must be positive: "-0" is refused."""
    [share] = parse_contracts(_rs(rate=zero, cap=zero)).revenue_share
    assert encode_agreement(share)["rate"] == encode_agreement(share)["cap"] == "0"
    assert str(money.cents(share.cap)) == "0.00", share.cap
    encoded = msgspec.json.decode(msgspec.json.encode(share))  # as a Decimal writes itself (the audit's details)
    assert not encoded["rate"].startswith("-") and not encoded["cap"].startswith("-"), encoded
    with pytest.raises(ContractsConfigError) as info:
        parse_contracts(_commit(amount=zero))
    assert "amount must be positive and at most" in str(info.value) and "-0" not in str(info.value), info.value
