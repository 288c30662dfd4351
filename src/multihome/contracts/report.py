"""Contract reports: accrued, remaining to the cap, projected cap date, commitment burn vs plan.

Money in a report is the exact ledger total rounded once, half-even, to cents (`*_exact` fields
carry the full precision). The recent accrual rate is the mean per day over the last
`window_days` of the agreement's period up to `now`:

    rate = accrued in [max(start, now - W), min(now, end)) / length of that window in days

and the projected date at which a remaining amount R is reached is `now + R / rate` days (none
when the rate is zero, or when that falls after the agreement ends).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import asdict, dataclass
from decimal import Decimal
from functools import partial

from ..config.contracts import Agreement, Commitment, RevenueShare
from . import money, terms
from .ledger import Ledger, Total

ON_PLAN_TOLERANCE = 0.005  # |burn vs plan| below half a percent of the commitment reads "on plan"

CSV_COLUMNS = (
    "contract_id",
    "kind",
    "currency",
    "starts_on",
    "ends_on",
    "limit",
    "accrued",
    "remaining",
    "calls",
    "daily_rate",
    "projected_date",
    "planned_to_date",
    "burn_vs_plan",
    "status",
    "as_of",
)


@dataclass(frozen=True)
class ContractReport:
    contract_id: str
    kind: str
    currency: str
    starts_on: str
    ends_on: str
    as_of: str  # ISO UTC timestamp the report was computed for
    calls: int
    accrued: str  # cents, half-even
    accrued_exact: str
    limit: str | None  # cap (revenue share; None = uncapped) or commitment amount
    remaining: str | None  # limit - accrued, never below 0
    daily_rate: str  # recent mean accrual per day, cents
    daily_rate_exact: str
    window_days: float
    projected_date: str | None  # cap reached / commitment exhausted, at the recent rate
    status: str
    # revenue share
    requested: str | None = None  # before the cap
    forgone: str | None = None  # requested - accrued: what the cap kept from accruing
    capped_at: str | None = None
    # commitment
    planned_to_date: str | None = None
    burn_vs_plan: float | None = None  # (burned - planned) / amount: > 0 ahead of plan, < 0 behind
    projected_at_end: str | None = None  # burned by the end at the recent rate

    def to_dict(self) -> dict:
        return asdict(self)

    def csv_row(self) -> dict:
        d = self.to_dict()
        row = {k: d.get(k) for k in CSV_COLUMNS}
        if row["burn_vs_plan"] is not None:
            row["burn_vs_plan"] = f"{row['burn_vs_plan']:.4f}"
        return {k: "" if v is None else v for k, v in row.items()}


def recent_window(a: Agreement, now: dt.datetime, window_days: int) -> tuple[dt.datetime, dt.datetime]:
    start, end = terms.period(a)
    lo = max(start, now - dt.timedelta(days=window_days))
    hi = min(now, end)
    return lo, max(lo, hi)


def _days(delta: dt.timedelta) -> Decimal:
    return Decimal(int(delta.total_seconds() * 1_000_000)) / Decimal(86_400_000_000)


def projected(now: dt.datetime, remaining: Decimal, rate: Decimal, end: dt.datetime) -> dt.datetime | None:
    if remaining <= 0 or rate <= 0:
        return None
    days = money.CTX.divide(remaining, rate)
    if days >= _days(end - now):  # not within the term (and never a date past the calendar's end)
        return None
    return now + dt.timedelta(days=float(days))


async def build_report(
    a: Agreement, ledger: Ledger, now: dt.datetime, window_days: int = 7, total: Total | None = None
) -> ContractReport:
    # As of `now`: a report for a past time (`--at`, `?at=`) counts no accrual made after it.
    cap = a.cap if isinstance(a, RevenueShare) else None
    past = await ledger.total_before(a.id, now, cap)
    if past is not None:
        total = past
    elif total is None:
        total = (await ledger.totals([a.id])).get(a.id)
    accrued = total.accrued if total else money.ZERO
    lo, hi = recent_window(a, now, window_days)
    span = _days(hi - lo)
    recent = await ledger.accrued_between(a.id, lo, hi) if span > 0 else money.ZERO
    rate = money.CTX.divide(recent, span) if span > 0 else money.ZERO
    start, end = terms.period(a)
    report = partial(  # the fields both kinds share
        ContractReport,
        contract_id=a.id,
        currency=a.currency,
        starts_on=a.starts_on.isoformat(),
        ends_on=a.ends_on.isoformat(),
        as_of=now.isoformat(),
        calls=total.calls if total else 0,
        accrued=str(money.cents(accrued)),
        accrued_exact=money.text(accrued),
        daily_rate=str(money.cents(rate)),
        daily_rate_exact=money.text(rate),
        window_days=float(span),
    )
    if isinstance(a, RevenueShare):
        remaining = None if a.cap is None else max(money.ZERO, money.sub(a.cap, accrued))
        when = projected(now, remaining, rate, end) if remaining is not None else None
        requested = total.requested if total else money.ZERO
        if now < start:  # before the term, whatever the cap: one of 0 is not "capped" before anything could accrue
            status = "not started"
        elif remaining is not None and remaining == 0:
            status = "capped"
        else:
            status = "ended" if now >= end else "accruing"
        return report(
            kind="revenue_share",
            limit=None if a.cap is None else str(money.cents(a.cap)),
            remaining=None if remaining is None else str(money.cents(remaining)),
            projected_date=when.date().isoformat() if when else None,
            status=status,
            requested=str(money.cents(requested)),
            forgone=str(money.cents(money.sub(requested, accrued))),
            capped_at=total.capped_at.isoformat() if total and total.capped_at else None,
        )
    assert isinstance(a, Commitment)
    plan = terms.planned(a, now)
    vs_plan = float(money.CTX.divide(money.sub(accrued, plan), a.amount))
    remaining = max(money.ZERO, money.sub(a.amount, accrued))
    when = projected(now, remaining, rate, end)
    left_days = _days(max(end - now, dt.timedelta(0)))
    at_end = money.add(accrued, money.mul(rate, left_days))
    status = "on plan" if abs(vs_plan) < ON_PLAN_TOLERANCE else "ahead" if vs_plan > 0 else "behind"
    return report(
        kind="commitment",
        limit=str(money.cents(a.amount)),
        remaining=str(money.cents(remaining)),
        projected_date=when.date().isoformat() if when else None,
        status=status,
        planned_to_date=str(money.cents(plan)),
        burn_vs_plan=round(vs_plan, 6),
        projected_at_end=str(money.cents(at_end)),
    )


async def build_reports(
    agreements: list[Agreement], ledger: Ledger, now: dt.datetime, window_days: int = 7
) -> list[ContractReport]:
    totals = await ledger.totals([a.id for a in agreements])
    return [await build_report(a, ledger, now, window_days, totals.get(a.id)) for a in agreements]


def to_csv(reports: list[ContractReport]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in reports:
        w.writerow(r.csv_row())
    return buf.getvalue()
