"""The whole decision: key scopes, the order checks apply in, bad data, the cache, and a rebuilt engine."""

from __future__ import annotations

import datetime as dt

import pytest

from multihome.policy import (
    EGRESS_DENIED,
    ENDPOINT_NOT_IN_KEY_SCOPE,
    ENTITLEMENT_REQUIRED,
    MODEL_NOT_IN_KEY_SCOPE,
    POLICY_UNAVAILABLE,
    EgressRule,
    Entitlement,
    Policy,
    PolicyEngine,
    entitlement_problems,
    policy_problems,
)

from .fixtures import ALL, NAMES, TODAY, principal

EU_ONLY = Policy("p_eu", "acme", "tenant", rules=[EgressRule("allow", data_zones=["EU"])])

# (case, key scopes (models, endpoints), group, endpoint, code or None, substring of the message)
SCOPES = [
    ("no scopes on the credential", (None, None), "gpt-4o", "embeddings", None, ""),
    ("endpoint in scope", (None, {"chat", "messages"}), "gpt-4o", "messages", None, ""),
    (
        "endpoint out of scope",
        (None, {"chat"}),
        "gpt-4o",
        "embeddings",
        ENDPOINT_NOT_IN_KEY_SCOPE,
        "This API key (key_1) may call only the [chat] endpoints, not 'embeddings'",
    ),
    ("model in scope", ({"gpt-4o", "claude"}, None), "claude", "chat", None, ""),
    ("model family in scope", ({"gpt-4o*"}, None), "gpt-4o-mini", "chat", None, ""),
    (
        "model out of scope",
        ({"gpt-4o*"}, None),
        "claude",
        "chat",
        MODEL_NOT_IN_KEY_SCOPE,
        "may call only the model groups [gpt-4o*], not 'claude'. Ask a tenant admin for a key whose scope includes 'claude'",
    ),
    ("empty model scope allows nothing", (set(), None), "gpt-4o", "chat", MODEL_NOT_IN_KEY_SCOPE, "not 'gpt-4o'"),
]


@pytest.mark.parametrize("case,scopes,group,endpoint,code,fragment", SCOPES, ids=[s[0] for s in SCOPES])
def test_key_scopes(case, scopes, group, endpoint, code, fragment):
    engine = PolicyEngine.from_rows([], [], [])
    who = principal(key="key_1", models=scopes[0], endpoints=scopes[1])
    decision = engine.decide(who, group, endpoint, ALL, TODAY)
    assert (decision.allowed, decision.code) == (code is None, code)
    assert decision.deployments == (NAMES if code is None else frozenset())
    assert fragment in decision.message


def test_first_failing_check_decides_and_egress_is_still_traced():
    """Key scope before entitlement before egress; the trace still shows the egress rules so
    explain can say what would happen once the first problem is fixed."""
    deny_all = Policy("p_block", "acme", "tenant", rules=[EgressRule("deny")])
    engine = PolicyEngine.from_rows([deny_all], [], ["gpt-4o"])
    out_of_scope = engine.decide(principal(key="key_1", models={"claude"}), "gpt-4o", "chat", ALL, TODAY)
    assert out_of_scope.code == MODEL_NOT_IN_KEY_SCOPE
    assert set(out_of_scope.denied) == NAMES and len(out_of_scope.trace) == 1
    unlicensed = engine.decide(principal(key="key_1"), "gpt-4o", "chat", ALL, TODAY)
    assert unlicensed.code == ENTITLEMENT_REQUIRED
    assert engine.decide(principal(key="key_1"), "claude", "chat", ALL, TODAY).code == EGRESS_DENIED


def test_invalid_rows_refuse_only_their_tenant():
    bad = Policy(
        "p_bad", "acme", "tenant", rules=[EgressRule("deny", regions=[])]
    )  # matches nothing: storage must reject
    assert policy_problems(bad) == [
        "policy p_bad.rules[0].regions: an empty list matches nothing; omit the field to mean any"
    ]
    engine = PolicyEngine.from_rows([bad, EU_ONLY], [], [])
    decision = engine.decide(principal("acme"), "gpt-4o", "chat", ALL, TODAY)
    assert (decision.allowed, decision.code) == (False, POLICY_UNAVAILABLE)
    assert "p_bad.rules[0].regions" in decision.message
    assert engine.decide(principal("globex"), "gpt-4o", "chat", ALL, TODAY).deployments == NAMES


@pytest.mark.parametrize(
    "row,problem",
    [
        (Policy("p", "acme", "team", rules=[]), "scope 'team' needs a scope_id"),
        (Policy("p", "acme", "tenant", "globex"), "scope_id must be its tenant id"),
        (
            Policy("p", "acme", "tenant", rules=[EgressRule("allow", regions=["eu-*-1"])]),
            "'*' only as its last character",
        ),
        (
            Entitlement("e", "acme", "gpt-4o", dt.date(2026, 2, 1), dt.date(2026, 1, 31)),
            "ends_on 2026-01-31 is before starts_on",
        ),
        (Entitlement("e", "acme", "*gpt", dt.date(2026, 1, 1), dt.date(2026, 1, 31)), "'*' only as its last character"),
        # A description reaches response headers (x-multihome-attempts) and a value reaches log lines:
        # a stored row with a line break refuses its tenant's calls rather than inject one.
        (
            Policy("p", "acme", "tenant", rules=[EgressRule("allow", description="EU\r\nX-Injected: 1")]),
            "rules[0].description contains a control character (U+000D",
        ),
        (
            Policy("p", "acme", "tenant", rules=[EgressRule("allow", deployments=["eu\n"])]),
            "rules[0].deployments[0] contains a control character (U+000A",
        ),
        (Policy("p", "acme", "tenant", rules=[EgressRule("allow", regions=["r"] * 101)]), "more than 100 values"),
        (Policy("p", "acme", "tenant", rules=[EgressRule("allow")] * 101), "more than 100 rules"),
    ],
)
def test_row_validation(row, problem):
    problems = policy_problems(row) if isinstance(row, Policy) else entitlement_problems(row)
    assert any(problem in p for p in problems), problems


def test_closed_engine_refuses_everything():
    decision = PolicyEngine.closed("storage unreachable").decide(principal(), "gpt-4o", "chat", ALL, TODAY)
    assert (decision.allowed, decision.code, decision.deployments) == (False, POLICY_UNAVAILABLE, frozenset())
    assert "storage unreachable" in decision.message


def test_repeated_calls_hit_the_cache_and_a_new_engine_sees_new_data():
    engine = PolicyEngine.from_rows([EU_ONLY], [], [])
    first = engine.decide(principal(team="ml", key="key_1"), "gpt-4o", "chat", list(ALL), TODAY)
    again = engine.decide(principal(team="ml", key="key_1"), "gpt-4o", "chat", list(ALL), TODAY)
    assert again is first and engine.cache_info().hits == 1
    # A different day, group or caller is its own entry.
    assert (
        engine.decide(principal(team="ml", key="key_1"), "gpt-4o", "chat", ALL, TODAY + dt.timedelta(days=1))
        is not first
    )
    assert first.deployments == {"az-eu", "br-eu"}
    widened = Policy("p_eu", "acme", "tenant", rules=[EgressRule("allow", data_zones=["EU", "US"])])
    rebuilt = PolicyEngine.from_rows([widened], [], [])
    assert rebuilt.decide(principal(team="ml", key="key_1"), "gpt-4o", "chat", ALL, TODAY).deployments == NAMES - {
        "oai"
    }


def test_explain_is_decide():
    engine = PolicyEngine.from_rows([EU_ONLY], [], [])
    args = (principal(team="ml"), "gpt-4o", "chat", ALL, TODAY)
    assert engine.explain(*args) == engine.decide(*args)
    body = engine.explain(*args).to_dict()
    assert body["deployments"] == ["az-eu", "br-eu"] and body["trace"][0]["policy_id"] == "p_eu"


def test_a_rebuild_compiles_only_the_policies_that_changed_and_decides_as_a_fresh_build(monkeypatch):
    """A build runs on a thread but holds the GIL the event loop needs: compiling every tenant's policies at
    each change let one tenant-admin's edits (16 MiB of rules, one small change a second) stall every other
    tenant's calls for up to 2 s. An unchanged policy's compiled form is taken from the engine replaced."""
    from multihome.policy import engine as engine_module

    compiled: list[str] = []
    real = engine_module.compile_policy

    def counting(policy: Policy):
        compiled.append(policy.id)
        return real(policy)

    monkeypatch.setattr(engine_module, "compile_policy", counting)
    deny_oai = Policy("p_no_oai", "acme", "team", scope_id="ml", rules=[EgressRule("deny", deployments=["oai"])])
    bad = Policy("p_bad", "globex", "tenant", rules=[EgressRule("allow", regions=[])])  # quarantines globex
    first = PolicyEngine.from_rows([EU_ONLY, deny_oai, bad], [], [])
    assert sorted(compiled) == ["p_eu", "p_no_oai"]
    compiled.clear()
    widened = Policy("p_eu", "acme", "tenant", rules=[EgressRule("allow", data_zones=["EU", "US"])])
    rebuilt = PolicyEngine.from_rows([widened, deny_oai, bad], [], [], previous=first)
    assert compiled == ["p_eu"]
    fresh = PolicyEngine.from_rows([widened, deny_oai, bad], [], [])
    for who in (principal(), principal(team="ml"), principal(tenant="globex")):
        assert rebuilt.decide(who, "gpt-4o", "chat", ALL, TODAY) == fresh.decide(who, "gpt-4o", "chat", ALL, TODAY)
    assert rebuilt.snapshot.quarantined == fresh.snapshot.quarantined and "globex" in rebuilt.snapshot.quarantined
