"""Identity + policy cost per request, in-process, with a real SQLite store behind them.

What one call pays before planning: find the managed API key in the in-memory snapshot (or a
cached OIDC token) and ask the policy gate for the caller's allowed deployments — with a tenant
policy, a team policy and a key policy (20 rules) over a 10-deployment group.
Target (issue 5): identity plus policy <= 50 us per request.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time

from multihome.api.policy_gate import PolicyGate
from multihome.config import parse_config
from multihome.identity.authenticator import Authenticator
from multihome.routing.catalog import Catalog
from multihome.storage import SnapshotCache, open_store

N = 10
CONFIG = """
server: {{allow_unauthenticated: true}}
providers:
{providers}
deployments:
{deployments}
model_groups:
  g: {{deployments: [{names}]}}
"""


def _config():
    providers = "\n".join(
        f"  p{i}: {{kind: openai, endpoint: 'http://127.0.0.1:9/v1', region: r{i}, data_zone: {'EU' if i % 2 else 'US'}}}"
        for i in range(N)
    )
    deployments = "\n".join(f"  d{i}: {{provider: p{i}, model: m}}" for i in range(N))
    return parse_config(
        CONFIG.format(providers=providers, deployments=deployments, names=", ".join(f"d{i}" for i in range(N)))
    )


async def main(iterations: int = 20000) -> dict[str, float]:
    tmp = tempfile.mkdtemp()
    store = await open_store(f"sqlite+aiosqlite:///{tmp}/bench.db", migrate=True)
    tenant = await store.create_tenant("bench", actor="bench")
    team = await store.create_team(tenant.id, "t", actor="bench")
    keys = [await store.create_key(tenant.id, name=f"k{i}", team_id=team.id, actor="bench") for i in range(200)]
    record, secret = keys[0]
    rules = lambda n, zone: {
        "egress": [{"effect": "deny", "regions": [f"x{j}"]} for j in range(n)]
        + [{"effect": "allow", "data_zones": [zone, "US"]}]
    }
    await store.create_policy(tenant.id, scope="tenant", rules=rules(7, "EU"), actor="bench")
    await store.create_policy(tenant.id, scope="team", scope_id=team.id, rules=rules(6, "EU"), actor="bench")
    await store.create_policy(tenant.id, scope="key", scope_id=record.id, rules=rules(4, "EU"), actor="bench")
    cache = SnapshotCache(store)
    await cache.start()
    config = _config()
    catalog = Catalog(config)
    gate = PolicyGate(catalog, cache)
    await gate.start()
    auth = Authenticator({}, managed=cache.keys.lookup)
    scope = {"headers": [(b"authorization", b"Bearer " + secret.encode())]}
    group = catalog.groups["g"]

    async def one() -> None:
        principal = await auth.authenticate(scope)
        gate.admit(principal, group, "chat")

    for _ in range(1000):
        await one()
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iterations // 5):
            await one()
        samples.append((time.perf_counter() - t0) / (iterations // 5) * 1e6)
    await cache.stop()
    await store.close()
    return {"identity_plus_policy_us": statistics.median(samples)}


if __name__ == "__main__":
    result = asyncio.run(main())
    us = result["identity_plus_policy_us"]
    print(
        f"| identity (managed key) + policy (20 rules, 3 scopes, 10 deployments) | {us:.1f} µs | ≤ 50 µs | {'yes' if us <= 50 else '**no**'} |"
    )
