"""PolicyGate with stateful-work pins, in-process: a stateful call of a pinned tenant is planned over
the deployments inside the pin (the requested group and its fallbacks), a stateless call or another
tenant's is not, and a routing failure is retold naming the pin (403 when nothing is inside it, the
routing status when what is inside is down)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from multihome.api.pipeline import _no_deployment
from multihome.api.policy_gate import PolicyGate, pin_refusal
from multihome.config import Breaker, parse_config
from multihome.routing.attempts import AllDeclined
from multihome.routing.breakers import Breakers
from multihome.routing.catalog import Catalog
from multihome.routing.latency import LatencyStats
from multihome.routing.planner import Planner, RequestShape
from multihome.routing.router import Router
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal
from multihome.storage.records import StatefulPin
from multihome.storage.snapshot import Snapshot

NOW = dt.datetime.now(dt.UTC)
CONFIG = """
server: {allow_unauthenticated: true}
providers:
  az: {kind: openai, endpoint: "http://127.0.0.1:9/v1", data_zone: eu}
  br: {kind: openai, endpoint: "http://127.0.0.1:9/v1", data_zone: us}
deployments:
  a1: {provider: az, model: m}
  b1: {provider: br, model: m}
  b2: {provider: br, model: m}
model_groups:
  main: {deployments: [b1, a1], fallback_groups: [spare]}
  spare: {deployments: [b2, a1]}
  bonly: {deployments: [b1]}
"""


def stored_pin(**fields) -> StatefulPin:
    base = dict(
        id="pin_1",
        tenant_id="acme",
        providers=["az"],
        data_zones=None,
        work=None,
        valid_from=NOW - dt.timedelta(hours=1),
        valid_until=None,
        note="",
        created_at=NOW,
        revoked_at=None,
    )
    return StatefulPin(**{**base, **fields})


@pytest.fixture
def world():
    catalog = Catalog(parse_config(CONFIG))
    gate = PolicyGate(catalog)
    gate._take_pins(Snapshot(1, {}, {}, {}, (), (), stateful_pins=(stored_pin(),)))
    planner = Planner(Breakers(Breaker()), LatencyStats(), rand=random.Random(1))
    return catalog, gate, Router(catalog, planner, None)  # type: ignore[arg-type]  # routing is not run here


def plans(world, tenant: str, work: str | None, group: str = "main") -> tuple[list[list[str]], object]:
    catalog, gate, router = world
    shape = RequestShape(frozenset())
    shape.policy = gate.admit(
        Principal(tenant=tenant, subject="s", source="key"), catalog.groups[group], "responses", None, work
    )
    return [[d.name for d in p.ordered] for p in router.plans(catalog.groups[group], shape, explain=True)], shape.policy


def test_a_pinned_tenants_stateful_call_is_planned_inside_the_pin_in_every_group(world):
    assert plans(world, "acme", None)[0] == [["b1", "a1"], ["b2", "a1"]]  # stateless: as configured
    assert plans(world, "other", "agent_step")[0] == [["b1", "a1"], ["b2", "a1"]]  # no pins: as configured
    ordered, admitted = plans(world, "acme", "agent_step")
    assert ordered == [["a1"], ["a1"]]
    assert set(admitted.pinned.removed) == {"b1", "b2"} and admitted.pinned.kept
    assert admitted.decision.deployments == frozenset({"a1"})  # limits are admitted against what may serve


def test_a_routing_failure_under_a_pin_names_it(world):
    _, admitted = plans(world, "acme", "background")
    down = AllDeclined(
        ApiError(503, "All deployments failed: a1 503.", type="server_error", code="all_deployments_failed"), []
    )
    assert _no_deployment(down) and not _no_deployment(ApiError(400, "bad", code="invalid_value"))
    err = pin_refusal(down, admitted.pinned, "main")
    assert err is down and err.status == 503 and err.body.code == "stateful_pin_unavailable"
    assert "pin pin_1 (providers [az])" in err.body.message and "cannot fail over" in err.body.message

    _, nothing = plans(world, "acme", "stored_response", group="bonly")
    assert not nothing.pinned.kept
    err = pin_refusal(
        ApiError(400, "No deployment of model 'bonly' can take this request.", code="unsupported_capability"),
        nothing.pinned,
        "bonly",
    )
    assert (
        err.status == 403 and err.body.type == "permission_error" and "no deployment inside the pin" in err.body.message
    )
