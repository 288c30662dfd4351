"""Which agreements a metered call counts towards, and what each agreement plans.

Pure functions over the agreement definitions; no I/O. Dates are UTC calendar dates, both ends
inclusive: an agreement from 2026-01-01 to 2026-12-31 runs from 2026-01-01T00:00Z up to (not
including) 2027-01-01T00:00Z.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from ..config.contracts import Agreement, Commitment, RevenueShare
from . import money

UTC = dt.UTC
DAY_S = 86400.0


def period(a: Agreement) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) as UTC datetimes."""
    start = dt.datetime.combine(a.starts_on, dt.time(), UTC)
    end = dt.datetime.combine(a.ends_on + dt.timedelta(days=1), dt.time(), UTC)
    return start, end


def period_ts(a: Agreement) -> tuple[float, float]:
    start, end = period(a)
    return start.timestamp(), end.timestamp()


def accrues(a: Agreement, tenant: str, model_group: str, provider: str | None, currency: str, at: float) -> bool:
    """Does a call (finished at unix time `at`) count towards agreement `a`?"""
    if currency != a.currency or provider is None:
        return False
    start, end = period_ts(a)
    if not start <= at < end:
        return False
    if isinstance(a, Commitment):
        return provider == a.provider
    b = a.basis
    return (
        (not b.tenants or tenant in b.tenants)
        and (not b.model_groups or model_group in b.model_groups)
        and (not b.providers or provider in b.providers)
    )


def requested(a: Agreement, cost: Decimal) -> Decimal:
    """What the call would accrue before any cap: cost x rate (revenue share) or the cost (commitment)."""
    return money.mul(cost, a.rate) if isinstance(a, RevenueShare) else cost


def limit(a: Agreement) -> Decimal | None:
    """The cumulative cap the ledger enforces (None: uncapped). A commitment has none: spend beyond
    it is real spend and is recorded."""
    return a.cap if isinstance(a, RevenueShare) else None


def planned_fraction(a: Commitment, at: float) -> float:
    """Linear planned burn: the share of the commitment that should be spent by unix time `at`."""
    start, end = period_ts(a)
    return min(1.0, max(0.0, (at - start) / (end - start)))


def planned(a: Commitment, at: dt.datetime) -> Decimal:
    """Planned burn to `at`, exact: amount x elapsed seconds / period seconds."""
    start, end = period(a)
    elapsed = min(max(at - start, dt.timedelta(0)), end - start)
    num = Decimal(int(elapsed.total_seconds() * 1_000_000))
    den = Decimal(int((end - start).total_seconds() * 1_000_000))
    return money.CTX.divide(money.mul(a.amount, num), den)


class Index:
    """Agreements by what they match on, so a call finds its agreements without scanning all."""

    def __init__(self, agreements: list[Agreement]) -> None:
        self.by_id = {a.id: a for a in agreements}
        self._by_provider: dict[str, list[Agreement]] = {}
        self._any_provider: list[Agreement] = []
        for a in agreements:
            if isinstance(a, Commitment):
                self._by_provider.setdefault(a.provider, []).append(a)
            elif a.basis.providers:
                for p in a.basis.providers:
                    self._by_provider.setdefault(p, []).append(a)
            else:
                self._any_provider.append(a)

    def matching(
        self, tenant: str, model_group: str, provider: str | None, currency: str, at: float
    ) -> list[Agreement]:
        if provider is None:
            return []
        cands = self._by_provider.get(provider)
        if cands is None:
            if not self._any_provider:
                return []  # no agreement names this provider (or none at all): every call metered without one
            cands = []
        out = [a for a in cands if accrues(a, tenant, model_group, provider, currency, at)]
        out += [a for a in self._any_provider if accrues(a, tenant, model_group, provider, currency, at)]
        return out
