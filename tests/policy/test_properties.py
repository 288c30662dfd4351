"""Properties over generated rule sets: the decision equals a plain reading of the rules, the trace
alone reproduces the decision, other tenants' rows change nothing, and adding a policy never widens."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from multihome.policy import DeploymentFacts, EgressRule, Policy, PolicyEngine  # noqa: E402

from .fixtures import TODAY, principal  # noqa: E402

PROVIDERS = {
    "azure-eu": ("azure", "westeurope", "EU"),
    "azure-us": ("azure", "eastus", "US"),
    "bedrock-eu": ("bedrock", "eu-central-1", "EU"),
    "bedrock-us": ("bedrock", "us-east-1", "US"),
    "openai": ("openai", None, None),
    "vertex": ("vertex", "europe-west4", None),
}
VALUES = {
    "providers": list(PROVIDERS) + ["azure-*", "bedrock-*"],
    "provider_kinds": ["azure", "bedrock", "openai", "vertex", "Azure"],
    "regions": ["westeurope", "eastus", "eu-central-1", "us-east-1", "europe-west4", "eu-*", "us-*", "*"],
    "data_zones": ["EU", "US", "eu", "*"],
    "deployments": [f"d{i}" for i in range(6)],
    "model_groups": ["gpt-4o", "gpt-4o*", "claude"],
}
GROUPS = ["gpt-4o", "gpt-4o-mini", "claude"]

rules = st.builds(
    lambda effect, dims: EgressRule(effect, **dims),
    st.sampled_from(["allow", "deny"]),
    # Few dimensions per rule, as people write them; more would make nearly every rule miss.
    st.sets(st.sampled_from(sorted(VALUES)), max_size=2).flatmap(
        lambda keys: st.fixed_dictionaries(
            {k: st.lists(st.sampled_from(VALUES[k]), min_size=1, max_size=2) for k in keys}
        )
    ),
)
scope_ids = st.sampled_from([("tenant", None), ("team", "ml"), ("team", "ops"), ("key", "key_1"), ("key", "key_2")])


@st.composite
def policies(draw, tenant):
    out = []
    for i in range(draw(st.integers(0, 5))):
        scope, scope_id = draw(scope_ids)
        out.append(Policy(f"{tenant}_p{i}", tenant, scope, scope_id, rules=draw(st.lists(rules, max_size=4))))
    return out


deployments = st.lists(st.sampled_from(sorted(PROVIDERS)), min_size=0, max_size=6).map(
    lambda provs: tuple(DeploymentFacts(f"d{i}", p, *PROVIDERS[p]) for i, p in enumerate(provs))
)
callers = st.tuples(st.sampled_from([None, "ml", "ops"]), st.sampled_from([None, "key_1", "key_2"]))


def _hit(patterns, value, fold):
    if value is None:
        return None
    value = value.casefold() if fold else value
    for p in patterns:
        p = p.casefold() if fold else p
        if (p.endswith("*") and value.startswith(p[:-1])) or p == value:
            return True
    return False


def _matches(rule: EgressRule, dep: DeploymentFacts, group: str) -> bool:
    facts = {
        "providers": (dep.provider, False),
        "provider_kinds": (dep.provider_kind, True),
        "regions": (dep.region, True),
        "data_zones": (dep.data_zone, True),
        "deployments": (dep.name, False),
        "model_groups": (group, False),
    }
    for field, (value, fold) in facts.items():
        patterns = getattr(rule, field)
        if patterns is None:
            continue
        hit = _hit(patterns, value, fold)
        if hit is None:  # unknown: never satisfies an allow, always satisfies a deny
            hit = rule.effect == "deny"
        if not hit:
            return False
    return True


def reference(pols, tenant, team, key, group, deps) -> frozenset[str]:
    """The semantics in docs/policy.md, read literally."""
    allowed = set()
    for dep in deps:
        ok = True
        for scope, scope_id in (("tenant", tenant), ("team", team), ("key", key)):
            if scope_id is None:
                continue
            for p in pols:
                if (
                    p.tenant_id != tenant
                    or p.scope != scope
                    or (p.scope_id or tenant if scope == "tenant" else p.scope_id) != scope_id
                ):
                    continue
                if any(r.effect == "deny" and _matches(r, dep, group) for r in p.rules):
                    ok = False
                allows = [r for r in p.rules if r.effect == "allow"]
                if allows and not any(_matches(r, dep, group) for r in allows):
                    ok = False
        if ok:
            allowed.add(dep.name)
    return frozenset(allowed)


def from_trace(decision, deps) -> frozenset[str]:
    """The allow-set recomputed from nothing but the trace."""
    keep = {d.name for d in deps}
    by_policy: dict[str, list] = {}
    for t in decision.trace:
        by_policy.setdefault(t.policy_id, []).append(t)
    for entries in by_policy.values():
        for t in entries:
            if t.effect == "deny":
                keep -= set(t.matched)
        allows = [t for t in entries if t.effect == "allow"]
        if allows:
            keep &= set().union(*(t.matched for t in allows))
    return frozenset(keep)


@settings(max_examples=400, deadline=None)
@given(policies("acme"), policies("globex"), callers, st.sampled_from(GROUPS), deployments)
def test_decision_matches_reference_and_trace(acme, globex, caller, group, deps):
    team, key = caller
    engine = PolicyEngine.from_rows(acme + globex, [], [])
    who = principal("acme", team, key)
    decision = engine.decide(who, group, "chat", deps, TODAY)
    expected = reference(acme, "acme", team, key, group, deps)
    assert decision.deployments == expected
    assert decision.allowed == bool(expected)
    assert set(decision.denied) == {d.name for d in deps} - expected
    # explain and enforcement are one path, and the trace alone reproduces the decision
    assert engine.explain(who, group, "chat", list(deps), TODAY) == decision
    assert from_trace(decision, deps) == expected
    # isolation: the other tenant's rows change nothing
    assert PolicyEngine.from_rows(acme, [], []).decide(who, group, "chat", deps, TODAY) == decision


@settings(max_examples=200, deadline=None)
@given(policies("acme"), st.lists(rules, min_size=1, max_size=4), st.sampled_from(GROUPS), deployments)
def test_adding_a_policy_never_widens(acme, extra, group, deps):
    base = PolicyEngine.from_rows(acme, [], []).decide(principal("acme", "ml", "key_1"), group, "chat", deps, TODAY)
    for scope, scope_id in (("tenant", None), ("team", "ml"), ("key", "key_1")):
        narrowed = PolicyEngine.from_rows(acme + [Policy("extra", "acme", scope, scope_id, rules=extra)], [], [])
        decision = narrowed.decide(principal("acme", "ml", "key_1"), group, "chat", deps, TODAY)
        assert decision.deployments <= base.deployments
