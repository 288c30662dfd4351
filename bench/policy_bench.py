"""Policy decision cost per request: ~20 rules across tenant, team and key scopes, 10 deployments,
a licensed group with entitlements, and 200 other tenants' rows in the snapshot.

Target (issue 5): identity + policy <= 50 us per request together; policy <= ~20 us.
Run: .venv/bin/python bench/policy_bench.py
"""

from __future__ import annotations

import datetime as dt
import statistics
import time

from multihome.policy import DeploymentFacts, EgressRule, Entitlement, Policy, PolicyEngine
from multihome.schema.principal import Principal

TODAY = dt.date(2026, 6, 15)
ZONES = [("westeurope", "EU"), ("eastus", "US"), ("eu-central-1", "EU"), ("us-east-1", "US"), (None, None)]
KINDS = ["azure", "azure", "bedrock", "bedrock", "openai"]
DEPLOYMENTS = tuple(
    DeploymentFacts(f"d{i}", f"prov{i}", KINDS[i % 5], ZONES[i % 5][0], ZONES[i % 5][1]) for i in range(10)
)


def rows(tenant: str) -> list[Policy]:
    a, d = "allow", "deny"
    return [
        Policy(
            f"{tenant}_residency",
            tenant,
            "tenant",
            rules=[
                EgressRule(a, data_zones=["EU"]),
                EgressRule(a, regions=["eu-*", "westeurope", "northeurope"]),
                EgressRule(d, providers=["prov9"]),
                EgressRule(d, model_groups=["legacy*"], provider_kinds=["openai"]),
            ],
        ),
        Policy(
            f"{tenant}_vendors",
            tenant,
            "tenant",
            rules=[
                EgressRule(a, provider_kinds=["azure", "bedrock", "vertex"]),
                EgressRule(a, providers=["prov4"]),
                EgressRule(d, deployments=["d7"]),
                EgressRule(d, regions=["eastus2"]),
            ],
        ),
        Policy(f"{tenant}_audit", tenant, "tenant", rules=[EgressRule(d, data_zones=["CN"])]),
        Policy(
            f"{tenant}_ml",
            tenant,
            "team",
            "ml",
            rules=[
                EgressRule(a, provider_kinds=["azure", "bedrock"]),
                EgressRule(a, deployments=["d0", "d2", "d5"]),
                EgressRule(d, model_groups=["gpt-4o-realtime*"]),
                EgressRule(d, providers=["prov8"]),
            ],
        ),
        Policy(f"{tenant}_ml_cost", tenant, "team", "ml", rules=[EgressRule(d, deployments=["d6"]), EgressRule(a)]),
        Policy(
            f"{tenant}_key",
            tenant,
            "key",
            "key_1",
            rules=[
                EgressRule(a, data_zones=["eu"]),
                EgressRule(a, providers=["prov0", "prov2"]),
                EgressRule(d, regions=["us-*"]),
                EgressRule(d, deployments=["d3"]),
                EgressRule(d, model_groups=["o1*"]),
            ],
        ),
    ]


def build(cache_size: int) -> PolicyEngine:
    policies, ents = [], []
    for t in ["acme"] + [f"other{i}" for i in range(200)]:
        policies += rows(t)
        ents.append(Entitlement(f"ent_{t}", t, "gpt-4o*", dt.date(2026, 1, 1), dt.date(2026, 12, 31)))
        ents.append(Entitlement(f"ent_{t}_old", t, "gpt-4o*", dt.date(2025, 1, 1), dt.date(2025, 12, 31)))
    return PolicyEngine.from_rows(policies, ents, {"gpt-4o", "gpt-4o-mini", "claude"}, cache_size=cache_size)


def measure(fn, iterations: int) -> float:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        samples.append((time.perf_counter() - t0) / iterations * 1e6)
    return statistics.median(samples)


def new_key(engine: PolicyEngine):
    """Each call from a key never seen before, in a team whose policies were already evaluated."""
    counter = iter(range(10**9))

    def call():
        n = next(counter)
        who = Principal("acme", f"k{n}", "api_key", team="ml", key_id=f"k{n}")
        return engine.decide(who, "gpt-4o", "chat", DEPLOYMENTS, TODAY)

    return call


def main(iterations: int = 20000) -> dict[str, float]:
    who = Principal(
        "acme",
        "key_1",
        "api_key",
        team="ml",
        key_id="key_1",
        scopes_models=frozenset({"gpt-4o*"}),
        scopes_endpoints=frozenset({"chat"}),
    )
    cached, uncached = build(8192), build(0)
    deps_list = list(DEPLOYMENTS)
    rules = sum(len(p.rules) for p in rows("acme"))
    d = cached.decide(who, "gpt-4o", "chat", DEPLOYMENTS, TODAY)
    assert d.allowed and d.deployments == {"d0", "d2", "d5"} and len(d.trace) == rules, d
    results = {
        "cached, tuple of facts, today given": measure(
            lambda: cached.decide(who, "gpt-4o", "chat", DEPLOYMENTS, TODAY), iterations
        ),
        "cached, list of facts, today=None (UTC now)": measure(
            lambda: cached.decide(who, "gpt-4o", "chat", deps_list), iterations
        ),
        "decision miss, policy verdicts cached (new key/day)": measure(new_key(cached), iterations),
        "uncached (every call evaluates all rules)": measure(
            lambda: uncached.decide(who, "gpt-4o", "chat", DEPLOYMENTS, TODAY), max(1, iterations // 10)
        ),
    }
    t0 = time.perf_counter()
    build(8192)
    results["build engine, 201 tenants x 22 rules (ms)"] = (time.perf_counter() - t0) * 1e3
    print(f"policy decide(): {rules} applicable rules (tenant 9, team 6, key 5), {len(DEPLOYMENTS)} deployments")
    for name, us in results.items():
        unit = "" if "(ms)" in name else " us"
        print(f"  {name:48s} {us:8.2f}{unit}")
    return results


if __name__ == "__main__":
    main()
