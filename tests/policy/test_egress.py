"""Egress and residency rules, table-driven: what a caller can reach and the reason for what it cannot."""

from __future__ import annotations

import msgspec
import pytest

from multihome.policy import EGRESS_DENIED, EgressRule, Policy, PolicyEngine

from .fixtures import ALL, AZ_US, BR_US, NAMES, OAI, TODAY, principal


def allow(**dims) -> EgressRule:
    return EgressRule("allow", **dims)


def deny(**dims) -> EgressRule:
    return EgressRule("deny", **dims)


def tenant(*rules, id="p_tenant", t="acme") -> Policy:
    return Policy(id, t, "tenant", rules=list(rules))


def team(*rules, id="p_team", t="acme", team="ml") -> Policy:
    return Policy(id, t, "team", team, rules=list(rules))


def key(*rules, id="p_key", t="acme", key="key_1") -> Policy:
    return Policy(id, t, "key", key, rules=list(rules))


# (case, policies, caller (team, key), model group, allowed deployments, {deployment: substring of its reason})
CASES = [
    ("no policies: everything", [], (None, None), "gpt-4o", NAMES, {}),
    (
        "deny overrides allow",
        [tenant(allow(provider_kinds=["azure"]), deny(regions=["eastus"]))],
        (None, None),
        "gpt-4o",
        {"az-eu"},
        {
            "az-us": "denied by tenant policy p_tenant.rules[1] (deny regions [eastus])",
            "br-eu": "provider kind 'bedrock' not listed",
        },
    ),
    (
        "deny overrides a more specific allow",
        [tenant(allow(deployments=["az-us"]), deny(data_zones=["US"]))],
        (None, None),
        "gpt-4o",
        set(),
        {"az-us": "denied by tenant policy p_tenant.rules[1]"},
    ),
    (
        "team narrows tenant",
        [tenant(allow(data_zones=["EU"])), team(allow(provider_kinds=["azure"]))],
        ("ml", None),
        "gpt-4o",
        {"az-eu"},
        {"br-eu": "not allowed by team ml policy", "az-us": "not allowed by tenant policy"},
    ),
    (
        "tenant policy applies without a team",
        [tenant(allow(data_zones=["EU"])), team(allow(provider_kinds=["azure"]))],
        (None, None),
        "gpt-4o",
        {"az-eu", "br-eu"},
        {},
    ),
    (
        "key narrows team",
        [team(allow(provider_kinds=["azure", "bedrock"])), key(allow(regions=["eu-*"]))],
        ("ml", "key_1"),
        "gpt-4o",
        {"br-eu"},
        {
            "az-eu": "not allowed by key key_1 policy p_key, which allows only: rules[0] (allow regions [eu-*]): region 'westeurope' not listed"
        },
    ),
    (
        "team cannot widen: allow-lists intersect",
        [tenant(allow(data_zones=["EU"])), team(allow(deployments=["az-us", "oai"]))],
        ("ml", None),
        "gpt-4o",
        set(),
        {"az-us": "not allowed by tenant policy", "az-eu": "not allowed by team ml policy"},
    ),
    (
        "team allow-everything does not undo a tenant allow-list",
        [tenant(allow(data_zones=["EU"])), team(allow())],
        ("ml", None),
        "gpt-4o",
        {"az-eu", "br-eu"},
        {},
    ),
    (
        "team deny narrows further",
        [tenant(allow(data_zones=["EU"])), team(deny(providers=["bedrock-eu"]))],
        ("ml", None),
        "gpt-4o",
        {"az-eu"},
        {"br-eu": "denied by team ml policy p_team.rules[0]"},
    ),
    (
        "EU-only tenant excludes US and unknown zones",
        [tenant(allow(data_zones=["eu"]))],
        (None, None),
        "gpt-4o",
        {"az-eu", "br-eu"},
        {"az-us": "data zone 'US' not listed", "oai": "data zone not configured"},
    ),
    (
        "unknown region never matches an allow by region, even '*'",
        [tenant(allow(regions=["*"]))],
        (None, None),
        "gpt-4o",
        NAMES - {"oai"},
        {"oai": "region not configured"},
    ),
    (
        "unknown zone matches a deny by zone (fail closed)",
        [tenant(deny(data_zones=["US"]))],
        (None, None),
        "gpt-4o",
        {"az-eu", "br-eu"},
        {"oai": "data zone not configured, so a deny on data_zones applies"},
    ),
    (
        "deny needs every listed dimension",
        [tenant(deny(provider_kinds=["bedrock"], data_zones=["US"]))],
        (None, None),
        "gpt-4o",
        NAMES - {"br-us"},
        {},
    ),
    (
        "rule limited to a model-group family",
        [tenant(deny(model_groups=["gpt-4o*"], provider_kinds=["openai"]))],
        (None, None),
        "gpt-4o-mini",
        NAMES - {"oai"},
        {"oai": "model_groups [gpt-4o*]"},
    ),
    (
        "rule for another model group does not apply",
        [tenant(deny(model_groups=["gpt-4o*"], provider_kinds=["openai"]))],
        (None, None),
        "claude",
        NAMES,
        {},
    ),
    (
        "allow rules of one policy are alternatives",
        [tenant(allow(deployments=["az-eu"]), allow(providers=["openai"]))],
        (None, None),
        "gpt-4o",
        {"az-eu", "oai"},
        {
            "br-eu": "rules[0] (allow deployments [az-eu]): deployment 'br-eu' not listed; "
            "rules[1] (allow providers [openai]): provider 'bedrock-eu' not listed"
        },
    ),
    (
        "two policies at one scope both apply: a second policy never widens",
        [
            tenant(allow(data_zones=["EU"]), id="p_residency"),
            tenant(allow(provider_kinds=["azure", "openai"]), id="p_vendors"),
        ],
        (None, None),
        "gpt-4o",
        {"az-eu"},
        {"az-us": "not allowed by tenant policy p_residency", "br-eu": "p_vendors"},
    ),
    ("another team's policy does not apply", [team(deny(), team="finance")], ("ml", "key_1"), "gpt-4o", NAMES, {}),
    ("another key's policy does not apply", [key(deny(), key="key_2")], ("ml", "key_1"), "gpt-4o", NAMES, {}),
]


@pytest.mark.parametrize("case,policies,caller,group,allowed,reasons", CASES, ids=[c[0] for c in CASES])
def test_egress_rules(case, policies, caller, group, allowed, reasons):
    engine = PolicyEngine.from_rows(policies, [], [])
    decision = engine.decide(principal(team=caller[0], key=caller[1]), group, "chat", list(ALL), TODAY)
    assert decision.allowed == bool(allowed)
    assert decision.deployments == frozenset(allowed)
    assert set(decision.denied) == NAMES - set(allowed)
    for dep, fragment in reasons.items():
        assert fragment in decision.denied[dep], decision.denied[dep]
    if not allowed:
        assert decision.code == EGRESS_DENIED
        for dep in NAMES:  # the refusal names every deployment with its reason
            assert f"{dep} is {decision.denied[dep]}" in decision.message


def test_eu_only_tenant_never_gets_a_us_deployment_when_every_eu_one_is_gone():
    """The engine knows nothing of health: with the EU deployments out of the list (down, drained,
    removed), the EU-only tenant is refused rather than sent to the US."""
    engine = PolicyEngine.from_rows([tenant(allow(data_zones=["EU"]))], [], [])
    who = principal(team="ml", key="key_1")
    assert engine.decide(who, "gpt-4o", "chat", list(ALL), TODAY).deployments == {"az-eu", "br-eu"}
    decision = engine.decide(who, "gpt-4o", "chat", [AZ_US, BR_US, OAI], TODAY)
    assert not decision.allowed
    assert decision.deployments == frozenset()
    assert decision.code == EGRESS_DENIED
    assert (
        "not allowed by tenant policy p_tenant, which allows only: rules[0] (allow data_zones [EU])" in decision.message
    )
    assert "Ask a tenant admin" in decision.message


def test_group_with_no_deployments_is_refused():
    decision = PolicyEngine.from_rows([], [], []).decide(principal(), "empty", "chat", [], TODAY)
    assert (decision.allowed, decision.code) == (False, EGRESS_DENIED)
    assert "has no deployments" in decision.message


def test_isolation_tenant_policies_never_reach_another_tenant():
    """Tenant A locks itself down at every scope, with team and key ids tenant B also uses."""
    a_rules = [tenant(deny(), t="a"), team(deny(), t="a", team="ml"), key(deny(), t="a", key="key_1")]
    engine = PolicyEngine.from_rows(a_rules, [], [])
    assert engine.decide(principal("a", "ml", "key_1"), "gpt-4o", "chat", ALL, TODAY).deployments == frozenset()
    b = engine.decide(principal("b", "ml", "key_1"), "gpt-4o", "chat", ALL, TODAY)
    assert b.allowed and b.deployments == NAMES and b.trace == []


def test_trace_lists_every_rule_with_what_it_matched():
    engine = PolicyEngine.from_rows(
        [tenant(allow(data_zones=["EU"], description="EU only")), team(deny(provider_kinds=["bedrock"]))], [], []
    )
    decision = engine.decide(principal(team="ml"), "gpt-4o", "chat", ALL, TODAY)
    assert [(t.scope, t.scope_id, t.policy_id, t.rule_index, t.effect, set(t.matched)) for t in decision.trace] == [
        ("tenant", "acme", "p_tenant", 0, "allow", {"az-eu", "br-eu"}),
        ("team", "ml", "p_team", 0, "deny", {"br-eu", "br-us"}),
    ]
    assert decision.trace[0].rule == "allow data_zones [EU] — EU only"
    assert decision.deployments == {"az-eu"}


def test_rules_decode_from_json_and_reject_typos():
    """A typo would leave a dimension unset (= any) and widen an allow rule, so it must not decode."""
    raw = b'{"id": "p", "tenant_id": "acme", "scope": "tenant", "rules": [{"effect": "allow", "data_zones": ["EU"]}]}'
    policy = msgspec.json.decode(raw, type=Policy)
    assert policy.rules[0].data_zones == ["EU"]
    assert msgspec.json.decode(msgspec.json.encode(policy), type=Policy) == policy
    with pytest.raises(msgspec.ValidationError, match="data_zone"):
        msgspec.json.decode(raw.replace(b'"data_zones"', b'"data_zone"'), type=Policy)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw.replace(b'"allow"', b'"permit"'), type=Policy)
