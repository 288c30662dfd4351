"""A call of a group that hedges or fails over on refusals may be billed for more than the answer it serves
(a hedge's loser that completed, each refusal failed over from, an attempt its walk's time budget cut before a
fallback group serves: docs/metering.md "Unserved answers are reserved for"). Admission reserves each answer it may be billed for, so those answers cannot take a hard
budget past its amount: a budget with room for one answer's worst case, not two, refuses such a call
(429 `budget_exceeded`) and admits the same call to a group that can be billed for one answer only. The
real app in process in front of a simulator, in-process and Redis counters."""

from __future__ import annotations

import uuid

import pytest

from builders import config, deployment, group, open_door, price, provider, simulated, typed
from multihome.routing.catalog import Catalog
from multihome.simulators import SimulatorConfig, start_simulator
from stored_app import served

pytestmark = pytest.mark.anyio
CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
# One CHAT answer's worst case at price(3, 15) is 369,000 nanos (tests/metering/test_usual_release.py); two
# answers' is 687,000: the budget has room for one.
BUDGET = "0.0005"
REFUSAL = ["capacity", "unavailable", "refusal"]


@pytest.fixture(params=["local", "redis"])
def counters(request, monkeypatch) -> dict:
    if request.param == "local":
        return {}
    monkeypatch.setenv("MH_TEST_UNSERVED_REDIS", request.getfixturevalue("redis_server").url)
    return {"redis_url_env": "MH_TEST_UNSERVED_REDIS", "key_prefix": f"u{uuid.uuid4().hex[:8]}:"}


@pytest.fixture
async def sim():
    s = await start_simulator(SimulatorConfig(kind="openai", name="unserved-reservation"))
    try:
        yield s
    finally:
        await s.close()


def _groups() -> dict:
    return {
        "plain": group("a", "b", retries=0),
        "hedged": group("a", "b", retries=0, hedge_after_ms=50),
        "filtered": group("a", "b", retries=0, fail_over_on=REFUSAL),
        # Its time budget may cut its attempt after the request went out (its prompt charged), then "plain" serves.
        "cut": group("a", retries=0, timeouts={"budget_s": 30}, fallback_groups=["plain"]),
    }


@pytest.mark.parametrize(("model", "status"), [("plain", 200), ("hedged", 429), ("filtered", 429), ("cut", 429)])
async def test_a_call_that_may_be_billed_twice_is_reserved_for_twice(sim, counters, model, status):
    cfg = config(
        server=open_door(),
        metering={
            "budgets": [{"scope": "key", "id": "*", "amount": BUDGET, "period": "day", "mode": "hard"}],
            **counters,
        },
        providers={"p": simulated("openai", sim.url)},
        deployments={name: deployment("p", f"m-{name}", price=price(3, 15)) for name in ("a", "b")},
        model_groups=_groups(),
    )
    async with served(cfg) as (client, _, _):
        resp = await client.post("/v1/chat/completions", json={"model": model, **CHAT})
        assert resp.status_code == status, resp.text
        if status == 429:
            assert resp.json()["error"]["code"] == "budget_exceeded"
            assert sim.state.requests() == [], "an upstream was called for a call the budget could not cover"


def test_how_many_answers_a_group_may_be_billed_for():
    cfg = typed(
        config(
            server=open_door(),
            providers={"p": provider("openai", "http://127.0.0.1:9/v1")},
            deployments={name: deployment("p", "m") for name in ("a", "b", "c")},
            model_groups={
                **_groups(),
                "three": group("a", "b", "c", fail_over_on=REFUSAL),
                "both": group("a", "b", "c", fail_over_on=REFUSAL, hedge_after_ms=50),
                "one": group("a", hedge_after_ms=50),
                "falls": group("a", fallback_groups=["filtered"]),
                "hedge-falls": group("a", "b", hedge_after_ms=50, fallback_groups=["filtered"]),
                # A walk its time budget cuts charges its attempt in flight (a hedge: both) and falls back.
                "cut-falls": group("a", timeouts={"budget_s": 1}, fallback_groups=["plain"]),
                "cut-hedge-falls": group("a", "b", hedge_after_ms=50, timeouts={"budget_s": 1}, fallback_groups=["c1"]),
                "cut-last": group("a", "b", timeouts={"budget_s": 1}),  # the cut is the call's end: nothing after
                "c1": group("c"),
            },
        )
    )
    answers = {name: g.answers for name, g in Catalog(cfg).groups.items()}
    assert answers == {
        "plain": 1,
        "hedged": 2,
        "filtered": 2,
        "cut": 2,
        "three": 3,
        "both": 3,  # never more than the deployments called
        "one": 1,
        "falls": 2,  # a refusal of the fallback group's first deployment, then its second's answer
        "hedge-falls": 3,
        "cut-falls": 2,  # the cut attempt's prompt, then the fallback group's answer
        "cut-hedge-falls": 3,  # both cut hedges' prompts, then the fallback group's answer
        "cut-last": 1,
        "c1": 1,
    }
