"""What stateful-work pins cost a call: policy admission plus planning of a 10-deployment group over
three providers, in-process (the best of 7 interleaved rounds: other processes share the cores), for a stateless call, a stateful call of a tenant without pins, and a
stateful call of a tenant with one live pin (docs/policy.md "Stateful-work pins").

Target: a stateless call or an unpinned tenant pays ~nothing (one dict lookup) over the plain
admission; a pinned step pays a clock read and one pass over the group's deployments (a few µs).
Run: .venv/bin/python bench/pins_bench.py
"""

from __future__ import annotations

import datetime as dt
import random
import time

from multihome.api.policy_gate import PolicyGate
from multihome.config import Breaker, parse_config
from multihome.routing.breakers import Breakers
from multihome.routing.catalog import Catalog
from multihome.routing.latency import LatencyStats
from multihome.routing.planner import Planner, RequestShape
from multihome.schema.principal import Principal
from multihome.storage.records import StatefulPin
from multihome.storage.snapshot import Snapshot

N = 10
ABOUT = """Stateful-work pins (bench/pins_bench.py): admission + planning of a 10-deployment group over three
providers, a pin to one of them (4 deployments stay), 201 tenants with pins; best of 7 interleaved
rounds on a shared machine. A stateless call never reads pins; an unpinned tenant's stateful step
pays one dict lookup (the difference is noise); a pinned step pays the pass over the group and the
skip reasons of the deployments it removes."""
NOW = dt.datetime.now(dt.UTC)


def _config() -> str:
    providers = "\n".join(
        f'  p{i}: {{kind: openai, endpoint: "http://127.0.0.1:9/v1", data_zone: {z}}}'
        for i, z in enumerate(["eu", "us", "eu"])
    )
    deps = "\n".join(f"  d{i}: {{provider: p{i % 3}, model: m{i}}}" for i in range(N))
    names = ", ".join(f"d{i}" for i in range(N))
    return f"""
server: {{allow_unauthenticated: true}}
providers:
{providers}
deployments:
{deps}
model_groups:
  g: {{deployments: [{names}]}}
"""


def _pins(tenants: int) -> tuple[StatefulPin, ...]:
    """One live pin for `pinned`, and one for each of `tenants` other tenants (the index's size)."""
    rows = []
    for name in ["pinned", *(f"t{i}" for i in range(tenants))]:
        rows.append(
            StatefulPin(
                id=f"pin_{name}",
                tenant_id=name,
                providers=["p0"],
                data_zones=None,
                work=None,
                valid_from=NOW - dt.timedelta(days=1),
                valid_until=NOW + dt.timedelta(days=365),
                note="",
                created_at=NOW,
                revoked_at=None,
            )
        )
    return tuple(rows)


def main(iterations: int = 20000) -> dict[str, float]:
    catalog = Catalog(parse_config(_config()))
    gate = PolicyGate(catalog)
    gate._take_pins(Snapshot(1, {}, {}, {}, (), (), stateful_pins=_pins(200)))
    planner = Planner(Breakers(Breaker()), LatencyStats(), rand=random.Random(1))
    group = catalog.groups["g"]
    cases = {
        "stateless call (chat completion)": (Principal(tenant="pinned", subject="s", source="key"), None),
        "stateful step, tenant without pins": (Principal(tenant="free", subject="s", source="key"), "agent_step"),
        "stateful step, tenant with a live pin": (Principal(tenant="pinned", subject="s", source="key"), "agent_step"),
    }
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(7):  # rounds interleave the cases, so a busy moment of the machine hits all of them
        for label, (principal, work) in cases.items():
            t0 = time.perf_counter()
            for _ in range(iterations // 7):
                shape = RequestShape(frozenset())
                shape.policy = gate.admit(principal, group, "responses", None, work)
                planner.plan(group, shape)
            samples[label].append((time.perf_counter() - t0) / (iterations // 7) * 1e6)
    results = {label: min(values) for label, values in samples.items()}  # the least disturbed round
    plan = planner.plan(
        group,
        RequestShape(
            frozenset(),
            policy=gate.admit(
                *cases["stateful step, tenant with a live pin"][:1], group, "responses", None, "agent_step"
            ),
        ),
    )
    assert [d.name for d in plan.ordered] == ["d0", "d3", "d6", "d9"], plan.ordered  # the pin held
    return results


if __name__ == "__main__":
    out = main()
    base = out["stateless call (chat completion)"]
    print(ABOUT)
    print()
    print("| admission + planning, 10 deployments | per call | over a stateless call |")
    print("|---|---|---|")
    for label, us in out.items():
        print(f"| {label} | {us:.2f} µs | {us - base:+.2f} µs |")
