"""Egress and residency rules: which of a group's deployments a caller may reach, and why not.

Each policy (at tenant, team or key scope) is a filter: a deployment matched by one of its deny
rules is out; if it has allow rules, a deployment none of them matches is out. A deployment stays
only if every applicable policy keeps it, so adding a policy, at any scope, never widens access.

Unknown region or data zone (not configured on the provider) fails closed both ways: it never
matches an allow rule that lists regions/zones, and it always matches a deny rule that lists them
(the deployment might be in the denied place).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from .model import ALLOW, CASEFOLD, DENY, DIMENSIONS, DeploymentFacts, EgressRule, Policy


class RuleTrace(msgspec.Struct, frozen=True):
    """One rule as evaluated for one request: which deployments it matched."""

    scope: str  # tenant | team | key
    scope_id: str
    policy_id: str
    rule_index: int
    effect: str
    matched: tuple[str, ...]
    rule: str  # the rule in words: "allow data_zones [eu]"


@dataclass(frozen=True, slots=True)
class _Dim:
    field: str  # EgressRule field: "regions"
    attr: str  # value it reads: "region"
    label: str  # "region"
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def note(self, shown: dict[str, str | None], effect: str) -> str:
        """Why this dimension decided: for an allow, that it missed; for a deny, that the value was unknown."""
        value = shown[self.attr]
        if value is None:
            if effect == DENY:
                return f"{self.label} not configured, so a deny on {self.field} applies"
            return f"{self.label} not configured"
        return f"{self.label} '{value}' not listed"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    policy_id: str
    index: int
    effect: str
    dims: tuple[_Dim, ...]
    summary: str

    @property
    def where(self) -> str:
        return f"{self.policy_id}.rules[{self.index}]"

    def match(self, values: dict[str, str | None]) -> tuple[bool, _Dim | None]:
        """(matched, the dimension worth naming): for an allow miss, the dimension that missed; for
        a deny hit on an unknown value, that dimension. Strings are built only for reasons shown."""
        unknown = None
        for dim in self.dims:
            value = values[dim.attr]
            if value is None:
                if self.effect == ALLOW:
                    return False, dim
                unknown = dim
            elif not (value in dim.exact or value.startswith(dim.prefixes)):
                return False, dim
        return True, unknown


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity: it keys caches
class CompiledPolicy:
    id: str
    scope: str
    scope_id: str
    rules: tuple[CompiledRule, ...]

    def evaluate(self, group: str, deployments: tuple[DeploymentFacts, ...]) -> PolicyResult:
        """Every rule against every deployment: what each matched, and what this policy excludes, why."""
        values = [(d.name, _values(d, group)) for d in deployments]
        deny_hits: dict[str, tuple[CompiledRule, _Dim | None]] = {}
        allow_hit: set[str] = set()
        allow_misses: dict[str, list[tuple[CompiledRule, _Dim]]] = {}
        has_allow = False
        trace = []
        for rule in self.rules:
            matched = []
            is_allow = rule.effect == ALLOW
            has_allow |= is_allow
            for name, vals in values:
                ok, dim = rule.match(vals)
                if ok:
                    matched.append(name)
                    if is_allow:
                        allow_hit.add(name)
                    elif name not in deny_hits:
                        deny_hits[name] = (rule, dim)
                elif is_allow:
                    assert dim is not None  # a miss names the dimension that missed
                    allow_misses.setdefault(name, []).append((rule, dim))
            trace.append(
                RuleTrace(self.scope, self.scope_id, self.id, rule.index, rule.effect, tuple(matched), rule.summary)
            )
        label = "tenant policy" if self.scope == "tenant" else f"{self.scope} {self.scope_id} policy"
        excluded: dict[str, str] = {}
        for dep in deployments:
            name = dep.name
            if name in deny_hits:
                rule, dim = deny_hits[name]
                note = f"; {dim.note(_shown(dep, group), DENY)}" if dim else ""
                excluded[name] = f"denied by {label} {rule.where} ({rule.summary}){note}"
            elif has_allow and name not in allow_hit:
                misses = allow_misses.get(name, [])
                shown = _shown(dep, group)
                listing = "; ".join(f"rules[{r.index}] ({r.summary}): {d.note(shown, ALLOW)}" for r, d in misses[:3])
                listing += f"; and {len(misses) - 3} more" if len(misses) > 3 else ""
                excluded[name] = f"not allowed by {label} {self.id}, which allows only: {listing}"
        return PolicyResult(tuple(trace), excluded)


@dataclass(frozen=True, slots=True)
class PolicyResult:
    trace: tuple[RuleTrace, ...]
    excluded: dict[str, str]  # deployment -> reason; read-only once built


def compile_policy(policy: Policy) -> CompiledPolicy:
    scope_id = policy.tenant_id if policy.scope == "tenant" else (policy.scope_id or "")
    rules = tuple(_compile_rule(policy, i, rule) for i, rule in enumerate(policy.rules))
    return CompiledPolicy(policy.id, policy.scope, scope_id, rules)


def _compile_rule(policy: Policy, index: int, rule: EgressRule) -> CompiledRule:
    dims = []
    words = []
    for field, attr, label in DIMENSIONS:
        values = getattr(rule, field)
        if values is None:
            continue
        fold = field in CASEFOLD
        norm = [v.casefold() if fold else v for v in values]
        dims.append(
            _Dim(
                field,
                attr,
                label,
                frozenset(v for v in norm if not v.endswith("*")),
                tuple(v[:-1] for v in norm if v.endswith("*")),
            )
        )
        words.append(f"{field} [{', '.join(values)}]")
    summary = f"{rule.effect} " + ("; ".join(words) if words else "everything")
    if rule.description:
        summary += f" — {rule.description}"
    return CompiledRule(policy.id, index, rule.effect, tuple(dims), summary)


def _shown(dep: DeploymentFacts, group: str) -> dict[str, str | None]:
    return {
        "deployment": dep.name,
        "provider": dep.provider,
        "provider_kind": dep.provider_kind,
        "region": dep.region,
        "data_zone": dep.data_zone,
        "model_group": group,
    }


def _values(dep: DeploymentFacts, group: str) -> dict[str, str | None]:
    return {
        "deployment": dep.name,
        "provider": dep.provider,
        "provider_kind": dep.provider_kind.casefold(),
        "region": dep.region.casefold() if dep.region else None,
        "data_zone": dep.data_zone.casefold() if dep.data_zone else None,
        "model_group": group,
    }


def compose(
    results: list[PolicyResult], deployments: tuple[DeploymentFacts, ...]
) -> tuple[tuple[str, ...], dict[str, str], list[RuleTrace]]:
    """(allowed names in the given order, denied name -> reason, trace of every rule evaluated).

    Each policy is one filter: its deny rules remove what they match; if it has allow rules, what
    none of them matches is removed. Filters compose by intersection, within a scope and across
    scopes, so adding a policy never widens access. A deployment's reason is the first exclusion
    met, in the order of `results` (tenant scope first, then team, then key; policies by id).
    """
    denied: dict[str, str] = {}
    trace: list[RuleTrace] = []
    for r in results:
        trace.extend(r.trace)
        for name, reason in r.excluded.items():
            if name not in denied:
                denied[name] = reason
    allowed = tuple(d.name for d in deployments if d.name not in denied)
    ordered = {d.name: denied[d.name] for d in deployments if d.name in denied}
    return allowed, ordered, trace
