"""What the CLI prints for people: money in its currency with two decimals, percentages, tables."""

from __future__ import annotations

from multihome.cli.output import money, named, percent, table


def test_money_has_its_currency_and_fixed_decimals():
    assert money("12.5", "USD") == "USD 12.50"
    assert money("0.0000001", "EUR") == "EUR 0.00"
    assert money("1234567.005", "USD") == "USD 1,234,567.01"
    assert money("0.00351", "USD", 4) == "USD 0.0035"


def test_percent_of_a_limit():
    assert percent("2.5", "10") == "25.0%"
    assert percent("0", "80") == "0.0%"
    assert percent("1", "0") == "-"


def test_table_has_a_header_row_and_aligned_columns():
    out = table(["id", "name"], [("ten_1", "acme"), ("ten_22", None)])
    assert out.splitlines() == ["ID      NAME", "ten_1   acme", "ten_22  -"]
    assert named("ten_1", {"ten_1": "acme"}) == "ten_1 (acme)" and named(None, {}) == "-"


def test_a_policy_whose_stored_rules_cannot_be_read_is_listed_as_unreadable():
    from multihome.cli.admin import rule_count

    assert rule_count({"egress": [{"effect": "allow"}, {"effect": "deny"}]}) == 2
    assert rule_count({}) == 0  # no egress rules: keeps everything
    for stored in (None, "allow", [{"effect": "deny"}], {"egress": None}, {"egress": "x"}):
        assert rule_count(stored) == "unreadable"
