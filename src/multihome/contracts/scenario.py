"""Scenario planner: project accruals (or commitment burn) to the agreement's end under a growth
scenario, find where the cap (or the commitment) is reached, and draw it.

With r0 the base daily accrual (the recent rate unless given), g the growth per 30 days and d the
days from now, the daily rate and the cumulative projected accrual F(d) are:

    flat:      r(d) = r0                        F(d) = r0 d
    linear:    r(d) = r0 (1 + g d / 30)         F(d) = r0 (d + g d^2 / 60)          (r stops at 0 if g < 0)
    compound:  r(d) = r0 (1 + g)^(d / 30)       F(d) = r0 * 30 / ln(1+g) * ((1+g)^(d/30) - 1)

The limit L (cap or commitment amount) is reached when A0 + F(d) = L, K = (L - A0) / r0:

    flat:      d = K
    linear:    d = (-1 + sqrt(1 + 4 (g/60) K)) / (2 g / 60)
    compound:  d = 30 ln(1 + K ln(1+g) / 30) / ln(1+g)

Projections are floats (a plan, not money owed); the ledger stays Decimal.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from ..config.contracts import MAX_AMOUNT, Agreement, Commitment
from . import terms

GROWTH = ("flat", "linear", "compound")
MAX_GROWTH = 100.0  # +10,000 % per 30 days: past any plan, short of overflowing a year of compounding
MAX_BASE = float(MAX_AMOUNT)  # per day: the most a cap or a commitment can be
UTC = dt.UTC


def cumulative(growth: str, r0: float, g: float, d: float) -> float:
    """F(d): projected accrual over the next d days."""
    if d <= 0 or r0 <= 0:
        return 0.0
    if growth == "flat" or g == 0:
        return r0 * d
    if growth == "linear":
        if g < 0:
            d = min(d, 30.0 / -g)  # the rate has fallen to zero; nothing more accrues
        return r0 * (d + g * d * d / 60.0)
    if growth == "compound":
        if g <= -1:
            raise ValueError("compound growth needs a rate above -1")
        k = math.log1p(g)
        return r0 * 30.0 / k * math.expm1(d * k / 30.0)
    raise ValueError(f"growth must be one of {', '.join(GROWTH)}")


def days_to_reach(growth: str, r0: float, g: float, needed: float) -> float | None:
    """Days until F(d) = needed (closed form), or None if it is never reached."""
    if needed <= 0:
        return 0.0
    if r0 <= 0:
        return None
    k_days = needed / r0
    if growth == "flat" or g == 0:
        return k_days
    if growth == "linear":
        a = g / 60.0
        disc = 1.0 + 4.0 * a * k_days
        if disc < 0:
            return None
        d = (-1.0 + math.sqrt(disc)) / (2.0 * a)
        if g < 0 and d > 30.0 / -g:
            return None
        return d
    if growth == "compound":
        k = math.log1p(g)
        x = 1.0 + k_days * k / 30.0
        if x <= 0:
            return None
        return 30.0 * math.log(x) / k
    raise ValueError(f"growth must be one of {', '.join(GROWTH)}")


@dataclass
class Projection:
    contract_id: str
    kind: str
    currency: str
    growth: str
    growth_rate: float
    base_daily: float
    now: dt.datetime
    until: dt.datetime
    accrued_now: float
    limit: float | None
    crossing: dt.datetime | None
    at_until: float  # projected cumulative at `until` (capped for a revenue share)
    history: list[tuple[dt.date, float]] = field(default_factory=list)  # cumulative by day, from the ledger
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    uncapped_at_until: float = 0.0  # what would have accrued by `until` without the cap

    def to_dict(self) -> dict:
        return {
            "contract_id": self.contract_id,
            "kind": self.kind,
            "currency": self.currency,
            "growth": self.growth,
            "growth_rate_per_30d": self.growth_rate,
            "base_daily": self.base_daily,
            "now": self.now.isoformat(),
            "until": self.until.isoformat(),
            "last_day": self.last_day,
            "accrued_now": self.accrued_now,
            "limit": self.limit,
            "crossing_date": self.crossing.date().isoformat() if self.crossing else None,
            "projected_at_until": self.at_until,
            "shortfall": round(self.shortfall, 2) if self.limit is not None else None,
            "beyond_limit": round(self.beyond_limit, 2) if self.limit is not None else None,
            "summary": self.headline,
        }

    def value_at(self, at: dt.datetime) -> float:
        d = (at - self.now).total_seconds() / 86400.0
        v = self.accrued_now + cumulative(self.growth, self.base_daily, self.growth_rate, d)
        if self.kind == "revenue_share" and self.limit is not None:
            v = min(v, self.limit)  # accrual stops at the cap
        return v

    @property
    def last_day(self) -> str:
        """`until` is exclusive (midnight after the last day): the inclusive last day, for people."""
        return (self.until - dt.timedelta(microseconds=1)).date().isoformat()

    @property
    def shortfall(self) -> float:
        """How far the projection ends below the limit (a commitment's unused, still paid, amount)."""
        return max(0.0, self.limit - self.at_until) if self.limit is not None else 0.0

    @property
    def beyond_limit(self) -> float:
        """Projected beyond the limit by `until`: spend past a commitment, or what a cap holds back."""
        return max(0.0, self.uncapped_at_until - self.limit) if self.limit is not None else 0.0

    @property
    def label(self) -> str:
        if self.crossing is None:
            what = "cap" if self.kind == "revenue_share" else "commitment"
            return f"{what} not reached by {self.last_day}"
        if self.kind == "revenue_share":
            return f"cap reached {self.crossing.date().isoformat()}"
        return f"commitment used up {self.crossing.date().isoformat()}"

    @property
    def headline(self) -> str:
        """The money a finance reader asks for, in one sentence: shortfall, crossing, or total."""
        cur, by = self.currency, self.last_day
        if self.limit is None:
            return f"Projected {money_text(self.at_until, cur)} accrued by {by} (no cap)"
        limit = money_text(self.limit, cur)
        if self.kind == "commitment":
            if self.crossing is None:
                return (
                    f"Projected shortfall {money_text(self.shortfall, cur)}: {money_text(self.at_until, cur)} "
                    f"of {limit} committed used by {by}"
                )
            return (
                f"Commitment {limit} used up {self.crossing.date().isoformat()}; projected "
                f"{money_text(self.beyond_limit, cur)} beyond it by {by}"
            )
        if self.crossing is None:
            return (
                f"Cap not reached: projected {money_text(self.at_until, cur)} by {by}, "
                f"{money_text(self.shortfall, cur)} below the {limit} cap"
            )
        return (
            f"Cap {limit} reached {self.crossing.date().isoformat()}; it holds back a projected "
            f"{money_text(self.beyond_limit, cur)} by {by}"
        )


def money_text(value: float, currency: str) -> str:
    """A chart's money: two decimals, thousands separated, the contract's currency code after."""
    return f"{value:,.2f} {currency}"


def project(
    a: Agreement,
    *,
    accrued_now: float,
    base_daily: float,
    growth: str,
    growth_rate: float,
    now: dt.datetime,
    until: dt.datetime | None = None,
    history: list[tuple[dt.date, float]] | None = None,
) -> Projection:
    if growth not in GROWTH:
        raise ValueError(f"growth must be one of {', '.join(GROWTH)}, not {growth!r}")
    start, end = terms.period(a)
    until = until or end
    if until <= now:
        raise ValueError(f"nothing to project: {until.date()} is not after {now.date()}")
    if growth == "compound" and growth_rate <= -1:
        raise ValueError("compound growth needs a rate above -1")
    # A plan's inputs, bounded: NaN or infinity drew a chart of "+nan%" or failed with a traceback, a negative
    # base projected a negative spend, 1e308 a number of 300 digits.
    if not (math.isfinite(growth_rate) and -MAX_GROWTH <= growth_rate <= MAX_GROWTH):
        raise ValueError(
            f"the growth rate (--rate) must be a fraction per 30 days from -{MAX_GROWTH:g} to {MAX_GROWTH:g}, "
            f"not {growth_rate}"
        )
    if not (math.isfinite(base_daily) and 0 <= base_daily <= MAX_BASE):
        raise ValueError(f"the base rate (--base) must be an amount per day from 0 to {MAX_BASE:g}, not {base_daily}")
    limit = float(a.amount) if isinstance(a, Commitment) else (None if a.cap is None else float(a.cap))
    crossing = None
    if limit is not None:
        d = days_to_reach(growth, base_daily, growth_rate, limit - accrued_now)
        # Compared in days first: a crossing past `until` is none, and at a tiny rate it can lie millions of
        # years out, past what a date holds (a barely used commitment failed as "does not fit in dates").
        if d is not None and d <= (until - now).total_seconds() / 86400.0:
            crossing = now + dt.timedelta(days=d)
    p = Projection(
        a.id,
        "commitment" if isinstance(a, Commitment) else "revenue_share",
        a.currency,
        growth,
        growth_rate,
        base_daily,
        now,
        until,
        accrued_now,
        limit,
        crossing,
        0.0,
        history or [],
        start,
        end,
    )
    p.at_until = p.value_at(until)
    p.uncapped_at_until = accrued_now + cumulative(
        growth, base_daily, growth_rate, (until - now).total_seconds() / 86400.0
    )
    return p


def cumulative_history(daily) -> list[tuple[dt.date, float]]:
    """Ledger daily sums -> cumulative by day (for the chart's history line)."""
    out, run = [], 0.0
    for day, amount in daily:
        run += float(amount)
        out.append((day, run))
    return out
