"""The edges docs/contracts.md draws in words: a call counts from `starts_on` 00:00Z up to, not
including, `ends_on` + 1 day 00:00Z; a commitment reads "on plan" within ±0.5 % of its amount."""

from __future__ import annotations

import datetime as dt

import pytest

from multihome.config.contracts import agreements_of, parse_contracts
from multihome.contracts.report import build_report
from multihome.contracts.service import ContractsService
from multihome.contracts.terms import accrues

from .helpers import metered, ts

UTC = dt.UTC
CFG = {
    "revenue_share": [
        {"id": "rs", "parties": ["A", "B"], "rate": "0.5", "starts_on": "2026-01-01", "ends_on": "2026-01-10"}
    ],
    "commitments": [
        {"id": "az", "provider": "p", "amount": "1000.00", "starts_on": "2026-01-01", "ends_on": "2026-01-10"}
    ],
    "flush_interval_s": 0.01,
}


@pytest.mark.parametrize(
    "at, counts",
    [
        ("2025-12-31T23:59:59.999", False),
        ("2026-01-01T00:00:00", True),
        ("2026-01-10T23:59:59.999", True),  # the last millisecond of ends_on
        ("2026-01-11T00:00:00", False),  # the next midnight
    ],
)
def test_a_term_is_whole_utc_days_both_inclusive(at, counts):
    for agreement in agreements_of(parse_contracts(CFG)):
        assert accrues(agreement, "ten_a", "g", "p", "USD", ts(at)) is counts, (agreement.id, at)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "planned, status",
    [
        ("500.00", "on plan"),
        ("496.00", "on plan"),  # burnt 0.4 % of the amount more than planned
        ("504.00", "on plan"),  # 0.4 % less
        ("494.00", "ahead"),  # 0.6 % more
        ("506.00", "behind"),  # 0.6 % less
    ],
)
async def test_a_commitment_is_on_plan_within_half_a_percent_of_its_amount(sqlite_url, planned, status):
    # 1000.00 over 10 days: the plan is 100.00 a day, so `planned` is reached 100 × days after the start.
    now = dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(days=float(planned) / 100)
    svc = ContractsService(parse_contracts(CFG), sqlite_url, clock=lambda: now.timestamp())
    await svc.start()
    try:
        svc.metered(metered("req_1", "500.00", ts("2026-01-01T06:00"), provider="p"))
        await svc.flush()
        r = await build_report(svc.agreement("az"), svc.ledger, now, window_days=7)
    finally:
        await svc.close()
    assert (r.planned_to_date, r.accrued, r.status) == (planned, "500.00", status)
