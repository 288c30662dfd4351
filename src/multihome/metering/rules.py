"""Which budgets and rate limits apply to a caller or a deployment, resolved once and cached.

A rule names one id or "*" (each id separately). An explicit rule for an id replaces the "*"
rules of the same scope for that id, so "every key $5/day, except key_ci $50/day" is two rules.

Team and key ids are each tenant's own: an OIDC team claim or subject is free text its tenant's identity
provider picks, so tenants acme and globex can both have a team `ml`. Their counters carry the tenant
(`counter_id`), and a config rule naming team `ml` applies to the team `ml` of each tenant separately; a
budget set through the admin API applies in its own tenant only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..config.metering import BudgetRule, MeteringConfig, RateLimitRule
from ..schema.principal import Principal
from .periods import WINDOW_MS
from .prices import to_nanos

_WINDOW_GRACE_MS = 60_000  # a rate counter lives one window longer, for late settlements


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    base: str  # counter key without the period bucket
    scope: str
    id: str
    limit_nanos: int
    hard: bool
    period: str
    currency: str
    rule: BudgetRule

    def describe(self) -> str:
        every = {"day": "daily", "month": "monthly", "total": "total"}[self.period]
        # Fixed-point, as written otherwise: a budget of 0.000000001 read "1E-9" in its 429.
        return f"{self.scope} {self.id}'s {every} budget of {self.rule.limit:f} {self.currency}"


@dataclass(frozen=True, slots=True)
class RateSpec:
    base: str
    scope: str
    id: str
    rpm: int | None
    tpm: int | None


def window_key(spec: RateSpec, kind: str, wid: int) -> str:
    """A rate counter: kind "r" (requests) or "t" (tokens) of the fixed minute `wid`."""
    return f"{spec.base}:{kind}:{wid}"


def window_expire_ms(wid: int) -> int:
    """When the counters of minute `wid` expire: one window after it ends, for late settlements."""
    return (wid + 1) * WINDOW_MS + _WINDOW_GRACE_MS


def counter_id(scope: str, ident: str, tenant: str) -> str:
    """The owner part of a counter's key: `{tenant}:{id}` for a team or key (ids are the tenant's own), the
    id alone for a tenant or deployment. The tenant's ':' and '%' are escaped, so the first ':' after it
    ends it and no tenant/id pair spells another's key."""
    if scope != "team" and scope != "key":
        return ident
    return f"{tenant.replace('%', '%25').replace(':', '%3A')}:{ident}"


def budget_base(prefix: str, scope: str, ident: str, tenant: str, period: str, currency: str) -> str:
    """A budget counter's key without its period's bucket (for the tenant scope, `tenant` is `ident`)."""
    return f"{prefix}b:{scope}:{counter_id(scope, ident, tenant)}:{period}:{currency}:"


def principal_key(p: Principal) -> str:
    """The `key` scope's id: the API key id, else the credential's subject (OIDC sub, env:VAR)."""
    return p.key_id or p.subject


_Rule = TypeVar("_Rule", BudgetRule, RateLimitRule)
# Rules by (scope, id), and the "*" rules by scope.
_Index = tuple[dict[tuple[str, str], list[_Rule]], dict[str, list[_Rule]]]


def _index(rules: Iterable[_Rule]) -> _Index[_Rule]:
    explicit: dict[tuple[str, str], list[_Rule]] = {}
    star: dict[str, list[_Rule]] = {}
    for rule in rules:
        if rule.id == "*":
            star.setdefault(rule.scope, []).append(rule)
        else:
            explicit.setdefault((rule.scope, rule.id), []).append(rule)
    return explicit, star


class AdminBudget(BudgetRule, kw_only=True):
    """A budget set through the admin API (stored, `bud_...`), as a rule beside the config ones."""

    budget_id: str
    tenant_id: str


def admin_budget(record) -> AdminBudget:
    """A stored budget (storage.records.Budget) as a rule."""
    return AdminBudget(
        scope=record.scope,
        id=record.scope_id,
        amount=record.amount,
        currency=record.currency,
        period=record.period,
        mode=record.mode,
        budget_id=record.id,
        tenant_id=record.tenant_id,
    )


def slot(rule: BudgetRule) -> tuple[str, str, str, str, str]:
    """The counters a rule counts against (for one id, or each id for "*"; of its tenant for an admin-set
    budget, else of every tenant: ""): the amount is not part of it."""
    return rule.scope, rule.id, rule.period, rule.currency, getattr(rule, "tenant_id", "")


class Rules:
    """Resolves rules for callers. Immutable once built: a change of budgets builds a new one, whose
    per-principal caches start empty."""

    def __init__(self, cfg: MeteringConfig, budgets: list[BudgetRule] | None = None) -> None:
        self.prefix = cfg.key_prefix
        self.budget_rules: tuple[BudgetRule, ...] = tuple(cfg.budgets if budgets is None else budgets)
        self._budgets = _index(self.budget_rules)
        self._rates = _index(cfg.rate_limits)
        self._cache: dict[tuple, tuple[tuple[BudgetSpec, ...], tuple[RateSpec, ...]]] = {}
        self._dep_cache: dict[str, RateSpec | None] = {}
        self.any = bool(self.budget_rules or cfg.rate_limits)
        # Whether any deployment has a rate limit: a call that failed over, or walked into a fallback group,
        # then has calls and tokens to count on deployments admission did not charge (Ticket.walked).
        self.deployments = any(r.scope == "deployment" for r in cfg.rate_limits)

    def _pick(self, index: _Index[_Rule], scope: str, ident: str, tenant: str) -> Sequence[_Rule]:
        explicit, star = index
        rules = explicit.get((scope, ident))
        if rules and scope != "deployment":
            # A budget set through the admin API is its tenant's: another tenant's team or key of that id
            # is not bound by it (config rules have no tenant: they bind each tenant's).
            rules = [r for r in rules if not isinstance(r, AdminBudget) or r.tenant_id == tenant]
        return rules or star.get(scope) or ()

    def budgets_for(self, scope: str, ident: str, tenant: str) -> tuple[BudgetSpec, ...]:
        """The budgets of one tenant, or of one of `tenant`'s teams or keys (for the tenant scope, `tenant`
        is `ident`)."""
        # One counter per (scope, tenant, id, period, currency): the amount is not part of the key, so
        # raising a budget keeps what was spent. Two rules for the same counter: the smaller amount wins.
        if scope == "tenant":
            tenant = ident
        chosen: dict[tuple[str, str], BudgetRule] = {}
        for rule in self._pick(self._budgets, scope, ident, tenant):
            slot = (rule.period, rule.currency)
            if slot not in chosen or rule.limit < chosen[slot].limit:
                chosen[slot] = rule
        return tuple(
            BudgetSpec(
                budget_base(self.prefix, scope, ident, tenant, r.period, r.currency),
                scope,
                ident,
                to_nanos(r.limit),
                r.mode == "hard",
                r.period,
                r.currency,
                r,
            )
            for r in chosen.values()
        )

    def for_principal(self, p: Principal) -> tuple[tuple[BudgetSpec, ...], tuple[RateSpec, ...]]:
        """The budgets and rate limits of a caller: of its tenant, team and key. Callers with the same
        three are one caller to the rules (the limiter keys its admission shapes by them too)."""
        cache_key = (p.tenant, p.team, principal_key(p))
        hit = self._cache.get(cache_key)
        if hit is not None:
            return hit
        budgets: list[BudgetSpec] = []
        rates: list[RateSpec] = []
        for scope, ident in (("tenant", p.tenant), ("team", p.team), ("key", principal_key(p))):
            if ident is None:
                continue
            budgets.extend(self.budgets_for(scope, ident, p.tenant))
            spec = self.rate_for(scope, ident, p.tenant)
            if spec is not None:
                rates.append(spec)
        if len(self._cache) > 100_000:  # bounded: ids come from credentials, not from request bodies
            self._cache.clear()
        hit = self._cache[cache_key] = (tuple(budgets), tuple(rates))
        return hit

    def rate_for(self, scope: str, ident: str, tenant: str) -> RateSpec | None:
        """The rate limits of one tenant, of one of `tenant`'s teams or keys, or of a deployment (shared by
        every tenant: `tenant` is not read). None: unlimited."""
        if scope == "deployment":
            return self.for_deployment(ident)
        if scope == "tenant":
            tenant = ident
        return self._rate(scope, ident, tenant, self._pick(self._rates, scope, ident, tenant))

    def for_deployment(self, name: str) -> RateSpec | None:
        try:
            return self._dep_cache[name]
        except KeyError:
            spec = self._rate("deployment", name, "", self._pick(self._rates, "deployment", name, ""))
            self._dep_cache[name] = spec
            return spec

    def _rate(self, scope: str, ident: str, tenant: str, rules) -> RateSpec | None:
        if not rules:
            return None
        # Several rules for one id: the strictest of each kind applies (one counter per kind).
        rpm = [r.requests_per_minute for r in rules if r.requests_per_minute is not None]
        tpm = [r.tokens_per_minute for r in rules if r.tokens_per_minute is not None]
        return RateSpec(
            f"{self.prefix}r:{scope}:{counter_id(scope, ident, tenant)}",
            scope,
            ident,
            min(rpm) if rpm else None,
            min(tpm) if tpm else None,
        )
