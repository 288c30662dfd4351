"""What is left of each budget and rate limit now, for the metrics scrape (observability/metrics.py).

Read, never counted: one `counters.read` per scrape (a Redis round trip when counters are shared).
A rule for one id is read for that id: a team or key id in each tenant the caller names (the store's
tenants, so the series stay bounded; a team's or key's counter is its tenant's own, rules.counter_id),
an admin-set budget in its own tenant. A `"*"` rule of the tenant scope is read for each tenant the
caller names; other `"*"` rules (each team, key or deployment separately) are not exported, as their ids
are not known until a call uses them. Each figure names its tenant ("" for a deployment: every tenant's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .periods import period, window
from .rules import AdminBudget, RateSpec, window_key

if TYPE_CHECKING:
    from .limiter import Limiter

# (scope, id, period, currency, tenant), remaining amount
BudgetHeadroom = tuple[tuple[str, str, str, str, str], float]
# (scope, id, "requests" | "tokens", tenant), remaining in this minute
RateHeadroom = tuple[tuple[str, str, str, str], int]


def _ids(rules: Iterable, tenants: list[str]) -> list[tuple[str, str, str]]:
    """(scope, id, tenant) of each counter to read."""
    out: dict[tuple[str, str, str], None] = {}
    for rule in rules:
        scope, ident = rule.scope, rule.id
        if ident == "*":
            if scope == "tenant":
                out.update(((scope, tenant, tenant), None) for tenant in tenants)
        elif scope == "tenant":
            out[(scope, ident, ident)] = None
        elif scope == "deployment":
            out[(scope, ident, "")] = None
        elif isinstance(rule, AdminBudget):
            if rule.tenant_id in tenants:
                out[(scope, ident, rule.tenant_id)] = None
        else:  # a config rule naming a team or key: that team or key of each tenant
            out.update(((scope, ident, tenant), None) for tenant in tenants)
    return list(out)


async def headroom(limiter: Limiter, tenants: Iterable[str]) -> tuple[list[BudgetHeadroom], list[RateHeadroom]]:
    tenants = sorted(set(tenants))
    rules = limiter.rules
    now = limiter.clock()
    now_ms = int(now * 1000)
    budget_specs = [
        (spec, tenant)
        for scope, ident, tenant in _ids(rules.budget_rules, tenants)
        for spec in rules.budgets_for(scope, ident, tenant)
    ]
    wid, _ = window(now_ms)
    rate_specs: list[tuple[RateSpec, str, str, int, str]] = []
    for scope, ident, tenant in _ids(limiter.cfg.rate_limits, tenants):
        spec = rules.rate_for(scope, ident, tenant)
        if spec is None:
            continue
        for kind, short, limit in (("requests", "r", spec.rpm), ("tokens", "t", spec.tpm)):
            if limit is not None:
                rate_specs.append((spec, kind, short, limit, tenant))
    keys = [spec.base + period(spec.period, now).bucket for spec, _ in budget_specs]
    keys += [window_key(spec, k, wid) for spec, _, k, _, _ in rate_specs]
    if not keys:
        return [], []
    used = await limiter.counters.read(keys, now_ms)
    budgets = [
        ((s.scope, s.id, s.period, s.currency, tenant), max(0, s.limit_nanos - u) / 1e9)
        for (s, tenant), u in zip(budget_specs, used[: len(budget_specs)], strict=True)
    ]
    rates = [
        ((spec.scope, spec.id, kind, tenant), max(0, limit - u))
        for (spec, kind, _, limit, tenant), u in zip(rate_specs, used[len(budget_specs) :], strict=True)
    ]
    return budgets, rates
