"""Every deployment called answered 429: the client gets 429 `all_deployments_throttled` with the upstream's
Retry-After (docs/api.md), also when the walk went on to a fallback group or passed over a deployment that
cannot take the request (neither was called, so neither is a failure: it was a 503 `all_deployments_failed`,
no Retry-After). The real app in process in front of a simulator over real HTTP."""

from __future__ import annotations

import pytest

from builders import config, deployment, group, open_door, simulated
from multihome.simulators import SimulatorConfig, start_simulator
from stored_app import served

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "hello"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
async def sim():
    s = await start_simulator(SimulatorConfig(kind="openai", name="all-throttled"))
    try:
        yield s
    finally:
        await s.close()


def _config(sim_url: str) -> dict:
    return config(
        server=open_door(),
        providers={"sim": simulated("openai", sim_url)},
        deployments={
            "a": deployment("sim", "m-a"),
            "c": deployment("sim", "m-c"),
            "x": deployment("sim", "m-x", capabilities=["chat", "streaming"]),  # no tools
        },
        model_groups={
            "only-c": group("c", retries=0),
            "a-then-c": group("a", retries=0, fallback_groups=["only-c"]),
            "xa": group("x", "a", retries=0),
        },
    )


@pytest.mark.parametrize(
    ("model", "tools"), [("a-then-c", False), ("xa", True)], ids=["fallback_group", "skipped_for_tools"]
)
async def test_every_deployment_called_throttled_is_a_429(sim, model, tools):
    sim.state.set_fault({"throttle": 7, "match": "m-a"})
    sim.state.set_fault({"throttle": 7, "match": "m-c"})
    async with served(_config(sim.url)) as (client, _, _):
        body: dict = {"model": model, "messages": USER}
        if tools:
            body["tools"] = [TOOL]
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"]["code"] == "all_deployments_throttled"
        assert resp.headers["retry-after"] == "7"
        assert not any(r["model"] == "m-x" for r in sim.state.requests())
