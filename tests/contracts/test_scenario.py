"""Scenario planner: crossing dates from the closed forms (checked against a numeric integration
and against hand numbers), and the CLI drawing PNG and SVG charts that state the money a finance
reader asks for (the crossing or the shortfall, in the contract's currency) with a "today" marker."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import math
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from multihome.cli.contracts import add_commands
from multihome.config.contracts import parse_contracts
from multihome.contracts import scenario
from multihome.contracts.chart import history_steps
from multihome.contracts.report import CSV_COLUMNS
from multihome.contracts.service import ContractsService

from .helpers import metered, ts

UTC = dt.UTC


def _numeric_days(
    growth: str, r0: float, g: float, needed: float, step: float = 1e-3, horizon: float = 2000
) -> float | None:
    """Walk the daily rate forward in small steps (midpoint rule) until `needed` has accrued."""
    acc, d = 0.0, 0.0
    while d < horizon:
        mid = d + step / 2
        rate = {"flat": r0, "linear": max(0.0, r0 * (1 + g * mid / 30)), "compound": r0 * (1 + g) ** (mid / 30)}[growth]
        if acc + rate * step >= needed:
            return d + (needed - acc) / rate
        acc += rate * step
        d += step
    return None


@pytest.mark.parametrize(
    "growth,g,hand",
    [
        ("flat", 0.0, 100.0),  # K = 1000 / 10 = 100 days
        (
            "linear",
            0.3,
            (-1 + math.sqrt(3)) / 0.01,
        ),  # (g/60) d^2 + d = 100: d = (-1 + sqrt(1 + 4*0.005*100)) / 0.01 = 73.205
        ("compound", 0.1, 30 * math.log(1 + 100 * math.log(1.1) / 30) / math.log(1.1)),  # = 86.84 days
        ("linear", -0.1, None),  # the rate reaches 0 after 300 days, having accrued 10 * 150 = 1500 >= 1000: reached
    ],
)
def test_closed_form_crossing_matches_hand_numbers_and_integration(growth, g, hand):
    d = scenario.days_to_reach(growth, 10.0, g, 1000.0)
    assert d == pytest.approx(_numeric_days(growth, 10.0, g, 1000.0), abs=1e-3)
    if hand is not None:
        assert d == pytest.approx(hand, rel=1e-12)
    assert scenario.cumulative(growth, 10.0, g, d) == pytest.approx(1000.0, rel=1e-9)


def test_a_shrinking_rate_that_never_reaches_the_cap():
    # linear g = -0.3: the rate hits 0 after 100 days, having accrued 10 * 100 / 2 = 500 < 1000
    assert scenario.days_to_reach("linear", 10.0, -0.3, 1000.0) is None
    assert _numeric_days("linear", 10.0, -0.3, 1000.0, step=0.01, horizon=400) is None


CONFIG = """
storage: {{url: "{url}"}}
contracts:
  revenue_share:
    - {{id: rs-1, parties: [Contoso, Fabrikam], rate: "0.5", cap: "1200", starts_on: 2026-01-01, ends_on: 2026-12-31}}
  commitments:
    - {{id: az-1, provider: azure-eastus, amount: "36500", starts_on: 2026-01-01, ends_on: 2026-12-31}}
"""


@pytest.fixture
def config_file(sqlite_url, tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(url=sqlite_url))
    cfg = parse_contracts(
        {
            "revenue_share": [
                {"id": "rs-1", "rate": "0.5", "cap": "1200", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}
            ],
            "commitments": [
                {
                    "id": "az-1",
                    "provider": "azure-eastus",
                    "amount": "36500",
                    "starts_on": "2026-01-01",
                    "ends_on": "2026-12-31",
                }
            ],
        }
    )

    async def fill():
        svc = ContractsService(cfg, sqlite_url)
        await svc.start()
        svc.metered(metered("req_1", "400.00", ts("2026-01-01T10:00")))  # rs-1: 200.00; az-1: 400.00
        await svc.flush()
        await svc.close()

    asyncio.run(fill())
    return str(path)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="multihome")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_project_draws_png_and_svg_with_the_cap_crossing_date(config_file, tmp_path, capsys):
    png, svg = tmp_path / "chart.png", tmp_path / "chart.svg"
    assert (
        _cli(
            "contracts",
            "project",
            "--config",
            config_file,
            "--contract",
            "rs-1",
            "--growth",
            "linear",
            "--rate",
            "0.3",
            "--base",
            "10",
            "--at",
            "2026-01-02T00:00:00+00:00",
            "--out",
            str(png),
            "--out",
            str(svg),
        )
        == 0
    )
    # accrued 200, cap 1200, 10/day growing 30% per 30 days: 73.205 days after 2026-01-02 00:00
    expected = (dt.datetime(2026, 1, 2, tzinfo=UTC) + dt.timedelta(days=(-1 + math.sqrt(3)) / 0.01)).date()
    assert expected == dt.date(2026, 3, 16)
    assert "cap reached 2026-03-16" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    texts = _svg_texts(svg)
    assert "cap reached 2026-03-16" in texts  # the annotation at the crossing, as text...
    assert "1,200.00 USD" in texts  # ...with the money it is about, in the contract's currency
    assert "cap 1,200.00 USD" in texts  # the cap line's legend entry
    assert "today 2026-01-02" in texts  # where the ledger ends and the projection begins
    assert any(t.startswith("Cap 1,200.00 USD reached 2026-03-16") for t in texts)  # the headline
    ticks = [t for t in texts if t.endswith(" USD") and t.replace(",", "").split()[0].isdigit()]
    assert "0 USD" in ticks and "1,200 USD" in ticks  # the money axis is money, not bare numbers


def _svg_texts(path) -> list[str]:
    """Every text element of an SVG chart (matplotlib keeps text as text with svg.fonttype none)."""
    return ["".join(e.itertext()).strip() for e in ET.parse(path).iter("{http://www.w3.org/2000/svg}text")]


def test_project_uses_the_recent_ledger_rate_by_default(config_file, tmp_path, capsys):
    out = tmp_path / "c.svg"
    assert (
        _cli(
            "contracts",
            "project",
            "--config",
            config_file,
            "--contract",
            "rs-1",
            "--at",
            "2026-01-02T00:00:00+00:00",
            "--out",
            str(out),
            "--json",
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    # window [Jan 1, Jan 2) = 1 day with 200.00 accrued -> 200/day; 1000 left -> 5 days -> 2026-01-07
    assert (data["base_daily"], data["crossing_date"]) == (200.0, "2026-01-07")
    assert "cap reached 2026-01-07" in out.read_text()


def test_project_commitment_burn_down_chart(config_file, tmp_path, capsys):
    out = tmp_path / "az.svg"
    assert (
        _cli(
            "contracts",
            "project",
            "--config",
            config_file,
            "--contract",
            "az-1",
            "--growth",
            "compound",
            "--rate",
            "0.5",
            "--base",
            "100",
            "--at",
            "2026-01-02T00:00:00+00:00",
            "--out",
            str(out),
        )
        == 0
    )
    d = 30 * math.log(1 + (36500 - 400) / 100 * math.log(1.5) / 30) / math.log(1.5)  # 129.6 days
    when = (dt.datetime(2026, 1, 2, tzinfo=UTC) + dt.timedelta(days=d)).date().isoformat()
    texts = _svg_texts(out)
    assert f"commitment used up {when}" in texts and "planned burn (linear)" in texts
    assert "36,500.00 USD" in texts and "today 2026-01-02" in texts


def test_project_commitment_shortfall_is_a_labelled_money_figure(config_file, tmp_path, capsys):
    out = tmp_path / "az.svg"
    assert (
        _cli(
            "contracts",
            "project",
            "--config",
            config_file,
            "--contract",
            "az-1",
            "--base",
            "10",
            "--at",
            "2026-01-02T00:00:00+00:00",
            "--out",
            str(out),
            "--json",
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    # 400.00 burned by Jan 2, then 10/day for the 364 days left: 4,040.00 of 36,500.00, short by 32,460.00
    assert (data["crossing_date"], data["projected_at_until"], data["shortfall"]) == (None, 4040.0, 32460.0)
    assert (
        data["summary"]
        == "Projected shortfall 32,460.00 USD: 4,040.00 USD of 36,500.00 USD committed used by 2026-12-31"
    )
    texts = _svg_texts(out)
    assert data["summary"] in texts  # the headline under the title
    assert "shortfall" in texts and "32,460.00 USD" in texts  # the bracket at the last day, labelled
    assert "today 2026-01-02" in texts
    # The "not reached" note is not drawn on the commitment line: it is the headline, above the plot.
    assert not any(t.startswith("commitment not reached") for t in texts)


def test_the_ledger_line_ends_at_today_where_the_projection_starts():
    a = parse_contracts(
        {"revenue_share": [{"id": "rs", "rate": "1", "cap": "100", "starts_on": "2026-01-01", "ends_on": "2026-01-31"}]}
    ).revenue_share[0]
    now = dt.datetime(2026, 1, 3, 15, 0, tzinfo=UTC)  # mid-afternoon: today's accruals are partial
    history = scenario.cumulative_history(
        [(dt.date(2026, 1, 1), 5), (dt.date(2026, 1, 2), 5), (dt.date(2026, 1, 3), 2)]
    )
    p = scenario.project(a, accrued_now=12.0, base_daily=5.0, growth="flat", growth_rate=0.0, now=now, history=history)
    xs, ys = history_steps(p)
    # Each day's accruals land at the end of that day, today's at "now", never at the next midnight.
    assert xs == [dt.datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)] + [now]
    assert ys == [0.0, 5.0, 10.0, 12.0]
    assert p.value_at(now) == ys[-1]  # the projection starts where the actual line ends


@pytest.mark.parametrize("growth, rate", [("flat", 0.0), ("linear", 0.1), ("compound", 0.01)])
def test_a_commitment_barely_burnt_projects_a_shortfall_not_an_error(growth, rate, tmp_path):
    """The quickstart's `contracts project` on its commitment: two calls burnt a fraction of a cent of
    $50,000, so at that rate the commitment is used up in millions of years. That crossing lies past the
    contract's end: no crossing, a shortfall, and a chart (it was "the projection does not fit in dates")."""
    a = parse_contracts(
        {
            "commitments": [
                {"id": "az", "provider": "p", "amount": "50000.00", "starts_on": "2025-01-01", "ends_on": "2035-12-31"}
            ]
        }
    ).commitments[0]
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    p = scenario.project(a, accrued_now=0.0003, base_daily=0.0000423, growth=growth, growth_rate=rate, now=now)
    assert p.crossing is None and p.headline.startswith("Projected shortfall")
    from multihome.contracts.chart import render

    render(p, [str(tmp_path / "burn.svg")])
    assert "Projected shortfall" in (tmp_path / "burn.svg").read_text()


def test_report_csv_from_the_cli(config_file, capsys):
    assert _cli("contracts", "report", "--config", config_file, "--csv", "--at", "2026-01-02T00:00:00+00:00") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    by_id = {r["contract_id"]: r for r in rows}
    assert (by_id["rs-1"]["accrued"], by_id["rs-1"]["remaining"], by_id["rs-1"]["projected_date"]) == (
        "200.00",
        "1000.00",
        "2026-01-07",
    )
    # az-1: 36500 over 365 days = 100/day planned; 1 day gone -> 100.00 planned, 400.00 burned: ahead 300/36500
    assert (by_id["az-1"]["planned_to_date"], by_id["az-1"]["burn_vs_plan"], by_id["az-1"]["status"]) == (
        "100.00",
        "0.0082",
        "ahead",
    )


def test_cli_names_an_unknown_contract(config_file):
    with pytest.raises(SystemExit, match="unknown contract 'nope' \\(known: az-1, rs-1\\)"):
        _cli("contracts", "report", "--config", config_file, "--contract", "nope")


def test_list_shows_a_table_in_words_and_money(config_file, capsys):
    assert _cli("contracts", "list", "--config", config_file) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "TERMS", "FROM", "TO", "ACCRUED", "CALLS"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert (
        "revenue share" in by_id["rs-1"]
        and "50.0% of metered cost to Contoso, Fabrikam, capped at USD 1,200.00" in by_id["rs-1"]
    )
    assert "USD 200.00" in by_id["rs-1"] and "commitment" in by_id["az-1"] and "USD 400.00" in by_id["az-1"]
    assert "USD 36,500.00 committed with azure-eastus" in by_id["az-1"]
    assert "RevenueShare" not in "\n".join(lines) and "Commitment" not in "\n".join(lines)
    assert _cli("contracts", "list", "--config", config_file, "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert {(c["id"], c["kind"], Decimal(c["accrued"])) for c in listed} == {
        ("rs-1", "revenue_share", 200),
        ("az-1", "commitment", 400),
    }


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        # Each was a traceback (ValueError, OverflowError) or a chart of nonsense ("+nan% per 30 days").
        (["report", "--at", "nonsense"], "--at 'nonsense': not an ISO 8601 time"),
        (["report", "--at", "0001-01-01T00:00:00+05:00"], "--at must be a time from 1970-01-01T00:00:00Z"),
        (["project", "--contract", "rs-1", "--rate", "nan"], "growth rate (--rate) must be a fraction per 30 days"),
        (["project", "--contract", "rs-1", "--rate", "inf"], "growth rate (--rate) must be a fraction per 30 days"),
        (["project", "--contract", "rs-1", "--rate", "1e400"], "growth rate (--rate) must be a fraction per 30 days"),
        (["project", "--contract", "az-1", "--base", "-5"], "base rate (--base) must be an amount per day from 0"),
        (["project", "--contract", "rs-1", "--base", "nan"], "base rate (--base) must be an amount per day from 0"),
        (["project", "--contract", "rs-1", "--base", "1e308"], "base rate (--base) must be an amount per day from 0"),
        (["project", "--contract", "rs-1", "--until", "2026-02-30"], "--until '2026-02-30': not a date"),
        (["project", "--contract", "rs-1", "--until", "9999-12-31"], "--until must be from 1970-01-01 to 9998-12-31"),
        (
            [
                "project",
                "--contract",
                "rs-1",
                "--until",
                "9998-12-31",
                "--base",
                "1",
                "--growth",
                "compound",
                "--rate",
                "1",
            ],
            "does not fit in numbers or dates",
        ),
        (
            ["project", "--contract", "az-1", "--until", "9998-12-31", "--base", "1", "--out", "chart.png"],
            "does not fit in numbers or dates",
        ),
    ],
)
def test_a_projection_or_report_input_out_of_range_is_an_error_naming_the_option(config_file, tmp_path, argv, words):
    argv = [str(tmp_path / a) if a == "chart.png" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        _cli("contracts", argv[0], "--config", config_file, "--at", "2026-01-10T00:00:00Z", *argv[1:])
    assert words in str(info.value), info.value
