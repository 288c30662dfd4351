"""What is left of each budget and rate limit now, for the metrics scrape (observability/metrics.py).

Read, never counted: one `counters.read` per scrape (a Redis round trip when counters are shared).
A rule for one id is read for that id; a `"*"` rule of the tenant scope is read for each tenant the
caller names (the store's tenants, so the series stay bounded); other `"*"` rules (each team, key or
deployment separately) are not exported, as their ids are not known until a call uses them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .periods import period, window
from .rules import RateSpec, window_key

if TYPE_CHECKING:
    from .limiter import Limiter

BudgetHeadroom = tuple[tuple[str, str, str, str], float]  # (scope, id, period, currency), remaining amount
RateHeadroom = tuple[tuple[str, str, str], int]  # (scope, id, "requests" | "tokens"), remaining in this minute


def _ids(rules: Iterable, tenants: Iterable[str]) -> list[tuple[str, str]]:
    out: dict[tuple[str, str], None] = {}
    for rule in rules:
        if rule.id != "*":
            out[(rule.scope, rule.id)] = None
        elif rule.scope == "tenant":
            out.update(((rule.scope, tenant), None) for tenant in sorted(tenants))
    return list(out)


async def headroom(limiter: Limiter, tenants: Iterable[str]) -> tuple[list[BudgetHeadroom], list[RateHeadroom]]:
    tenants = list(tenants)
    rules = limiter.rules
    now = limiter.clock()
    now_ms = int(now * 1000)
    budget_specs = [
        spec for scope, ident in _ids(rules.budget_rules, tenants) for spec in rules.budgets_for(scope, ident)
    ]
    wid, _ = window(now_ms)
    rate_specs: list[tuple[RateSpec, str, str, int]] = []
    for scope, ident in _ids(limiter.cfg.rate_limits, tenants):
        spec = rules.rate_for(scope, ident)
        if spec is None:
            continue
        for kind, short, limit in (("requests", "r", spec.rpm), ("tokens", "t", spec.tpm)):
            if limit is not None:
                rate_specs.append((spec, kind, short, limit))
    keys = [spec.base + period(spec.period, now).bucket for spec in budget_specs]
    keys += [window_key(spec, k, wid) for spec, _, k, _ in rate_specs]
    if not keys:
        return [], []
    used = await limiter.counters.read(keys, now_ms)
    budgets = [
        ((s.scope, s.id, s.period, s.currency), max(0, s.limit_nanos - u) / 1e9)
        for s, u in zip(budget_specs, used[: len(budget_specs)], strict=True)
    ]
    rates = [
        ((spec.scope, spec.id, kind), max(0, limit - u))
        for (spec, kind, _, limit), u in zip(rate_specs, used[len(budget_specs) :], strict=True)
    ]
    return budgets, rates
