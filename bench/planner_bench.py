"""Planning cost per request: a 10-deployment group, every strategy, in-process (no network).

Target (issue 4): planning adds <= 50 us per request with 10 deployments in a group.
"""

from __future__ import annotations

import random
import statistics
import time

import msgspec

from multihome.config import Breaker, parse_config
from multihome.routing.breakers import Breakers
from multihome.routing.catalog import Catalog
from multihome.routing.commitments import StaticCommitments
from multihome.routing.latency import LatencyStats
from multihome.routing.planner import Planner, RequestShape
from multihome.schema.chat import parse_chat

N_DEPLOYMENTS = 10
STRATEGIES = ["primary-first", "lowest-cost", "lowest-latency", "weighted", "commitment-burn-down"]


def _config() -> str:
    deps = "\n".join(
        f"  d{i}: {{provider: p, model: m{i}, context_window: {8000 * (i + 1)}, price: {{input: {i + 1}, output: {2 * i + 1}}},"
        f" commitment: pool{i % 3}}}"
        for i in range(N_DEPLOYMENTS)
    )
    names = ", ".join(f"d{i}" for i in range(N_DEPLOYMENTS))
    groups = "\n".join(f"  {s}: {{deployments: [{names}], strategy: {s}}}" for s in STRATEGIES)
    return f"""
server: {{allow_unauthenticated: true}}
providers:
  p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}
deployments:
{deps}
model_groups:
{groups}
"""


def main(iterations: int = 20000) -> dict[str, float]:
    catalog = Catalog(parse_config(_config()))
    latency = LatencyStats()
    for i in range(N_DEPLOYMENTS):
        latency.observe(f"d{i}", 10.0 + i, stream=False)
    planner = Planner(Breakers(Breaker()), latency, StaticCommitments({"pool0": 0.1, "pool1": -0.2}), random.Random(1))
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {
        "model": "x",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello " * 200}],
        "tools": [tool],
        "max_tokens": 500,
    }
    parsed = parse_chat(msgspec.json.encode(body))
    shape = RequestShape(parsed.needs, False, parsed.request)
    results = {}
    for strategy in STRATEGIES:
        group = catalog.groups[strategy]
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(iterations // 5):
                planner.plan(group, shape)
            samples.append((time.perf_counter() - t0) / (iterations // 5) * 1e6)
        results[strategy] = statistics.median(samples)
    return results


if __name__ == "__main__":
    for strategy, us in main().items():
        print(f"| {strategy} | {us:.1f} µs | {'yes' if us <= 50 else '**no**'} |")
