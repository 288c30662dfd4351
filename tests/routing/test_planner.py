"""Planning rules, table-driven: skips with reasons, and every strategy's order."""

from __future__ import annotations

import random

import msgspec
import pytest

from builders import NOWHERE, config, deployment, group, open_door, price, provider, typed
from multihome.config import Breaker
from multihome.routing.breakers import Breakers
from multihome.routing.catalog import Catalog
from multihome.routing.commitments import StaticCommitments
from multihome.routing.latency import LatencyStats
from multihome.routing.planner import Planner, RequestShape
from multihome.schema.chat import parse_chat

ALL = ("big", "small", "text", "vision")
CONFIG = config(
    server=open_door(),
    providers={"p": provider("openai", NOWHERE)},
    deployments={
        "big": deployment("p", "m", context_window=200000, price=price(5.0, 15.0), commitment="azure-2026"),
        "small": deployment(
            "p", "m", context_window=8000, max_output_tokens=2000, price=price(0.5, 1.5), commitment="aws-2026"
        ),
        "text": deployment("p", "m", capabilities=["chat", "streaming"], price=price(1.0, 2.0)),
        "vision": deployment("p", "m", price=price(3.0, 3.0)),
    },
    model_groups={
        "first": group(*ALL),
        "cost": group(*ALL, strategy="lowest-cost"),
        "fast": group(*ALL, strategy="lowest-latency"),
        "weights": group("big", "small", strategy="weighted", weights={"big": 3, "small": 1}),
        "burn": group("big", "small", "text", strategy="commitment-burn-down"),
    },
)

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
IMAGE = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}


def _shape(stream=False, narrow=None, **body):
    body.setdefault("messages", [{"role": "user", "content": "hello"}])
    parsed = parse_chat(msgspec.json.encode({"model": "x", **body}))
    return RequestShape(parsed.needs, stream, parsed.request, frozenset(narrow) if narrow else None)


@pytest.fixture
def world():
    catalog = Catalog(typed(CONFIG))
    breakers = Breakers(Breaker(consecutive_failures=2, cooldown_s=60))
    latency = LatencyStats(alpha=1.0)
    planner = Planner(breakers, latency, StaticCommitments({"aws-2026": 0.10, "azure-2026": 0.25}), random.Random(7))
    return catalog, planner


SKIPS = [
    ("plain request keeps config order", {}, None, ["big", "small", "text", "vision"], {}),
    (
        "tools skip the text-only deployment",
        {"tools": [TOOL]},
        None,
        ["big", "small", "vision"],
        {"text": "lacks tools"},
    ),
    (
        "image skips the text-only deployment",
        {"messages": [IMAGE]},
        None,
        ["big", "small", "vision"],
        {"text": "lacks vision"},
    ),
    (
        "json_schema needs structured outputs",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}},
        None,
        ["big", "small", "vision"],
        {"text": "lacks json_schema"},
    ),
    (
        "long prompt skips the small window",
        {"messages": [{"role": "user", "content": "x" * 40000}]},
        None,
        ["big", "text", "vision"],
        {"small": "context window 8000 < ~10004 tokens needed"},
    ),
    (
        "output limit beyond the deployment's",
        {"max_tokens": 4000},
        None,
        ["big", "text", "vision"],
        {"small": "max output 2000 < 4000 tokens requested"},
    ),
    (
        "client narrowing",
        {},
        ["small", "vision"],
        ["small", "vision"],
        {"big": "not among the deployments the request narrowed to"},
    ),
]


@pytest.mark.parametrize("name, body, narrow, order, reasons", SKIPS, ids=[s[0] for s in SKIPS])
def test_skip_rules(world, name, body, narrow, order, reasons):
    catalog, planner = world
    plan = planner.plan(catalog.groups["first"], _shape(narrow=narrow, **body))
    assert [d.name for d in plan.ordered] == order
    skipped = {c.deployment: c.reason for c in plan.considered if c.decision == "skipped"}
    for dep, reason in reasons.items():
        assert skipped[dep] == reason


def test_open_breaker_is_skipped_with_its_reason(world):
    catalog, planner = world
    planner.breakers.record("big", False)
    planner.breakers.record("big", False)
    plan = planner.plan(catalog.groups["first"], _shape())
    assert [d.name for d in plan.ordered] == ["small", "text", "vision"]
    assert plan.considered[0].reason.startswith("breaker open for")


def test_lowest_cost_orders_by_estimated_cost_with_config_order_breaking_ties(world):
    catalog, planner = world
    plan = planner.plan(catalog.groups["cost"], _shape(max_tokens=100))
    # 4 prompt tokens-ish: cost is driven by output price: small 1.5 < text 2.0 < vision 3.0 < big 15.0
    assert [d.name for d in plan.ordered] == ["small", "text", "vision", "big"]
    assert all(
        c.score is not None
        for c in planner.plan(catalog.groups["cost"], _shape(max_tokens=100), explain=True).considered
    )


def test_lowest_cost_prices_1024_output_tokens_when_the_client_sets_no_limit(world):
    """docs/routing.md: estimated cost = prompt tokens x input price + (max tokens or 1,024) x output price."""
    catalog, planner = world

    def scores(**body):
        plan = planner.plan(catalog.groups["cost"], _shape(**body), explain=True)
        return {c.deployment: c.score for c in plan.considered}

    unset, at_1024, at_100 = scores(), scores(max_tokens=1024), scores(max_tokens=100)
    assert unset == at_1024 != at_100
    # The output part: (1024 - 100) tokens x small's output price of 1.50 per million.
    assert unset["small"] - at_100["small"] == pytest.approx(924 * 1.5 / 1_000_000)
    assert scores(max_completion_tokens=100) == at_100


def test_lowest_latency_uses_observed_latency_and_tries_unmeasured_first(world):
    catalog, planner = world
    for dep, ms in {"big": 50.0, "small": 20.0, "text": 90.0}.items():
        planner.latency.observe(dep, ms, stream=False)
    plan = planner.plan(catalog.groups["fast"], _shape())
    assert [d.name for d in plan.ordered] == ["vision", "small", "big", "text"]
    planner.latency.observe("small", 500.0, stream=True)
    stream_plan = planner.plan(catalog.groups["fast"], _shape(stream=True))
    assert [d.name for d in stream_plan.ordered] == ["vision", "big", "text", "small"]


def test_weighted_order_follows_the_weights(world):
    catalog, planner = world
    firsts = [planner.plan(catalog.groups["weights"], _shape()).ordered[0].name for _ in range(4000)]
    share = firsts.count("big") / len(firsts)
    assert 0.70 <= share <= 0.80  # 3:1 weights


def test_commitment_burn_down_prefers_the_pool_furthest_behind(world):
    catalog, planner = world
    plan = planner.plan(catalog.groups["burn"], _shape())
    # azure-2026 is 25% behind plan, aws-2026 10%; `text` draws on no pool.
    assert [d.name for d in plan.ordered] == ["big", "small", "text"]


def test_plan_is_fast_enough_to_be_explained_as_data(world):
    catalog, planner = world
    out = planner.plan(catalog.groups["first"], _shape(tools=[TOOL]), explain=True).to_dict()
    assert out["order"] == ["big", "small", "vision"]
    assert {"deployment": "text", "decision": "skipped", "reason": "lacks tools"} in out["deployments"]


def test_policy_view_excludes_deployments_first_with_its_reason(world):
    from dataclasses import dataclass

    @dataclass
    class View:
        deployments: frozenset
        denied: dict

    catalog, planner = world
    shape = _shape()
    shape.policy = lambda group: View(frozenset({"small", "vision"}), {"big": "tenant eu-only: deny data_zone US"})
    plan = planner.plan(catalog.groups["first"], shape)
    assert [d.name for d in plan.ordered] == ["small", "vision"]
    skipped = {c.deployment: c.reason for c in plan.considered if c.decision == "skipped"}
    assert skipped == {
        "big": "denied by policy: tenant eu-only: deny data_zone US",
        "text": "denied by policy: not allowed",
    }
