"""A tenant has at most responses.agent.max_foreground_per_tenant foreground agent runs in progress at once on a
replica: each holds its connection and its MCP sessions for up to max_run_s, and one tenant opening thousands
held as many connections and sessions of the gateway's. Past its share a create is a 429 in OpenAI's error format
before any server is called; another tenant's run is not held by it, and a run that ends gives its place back.
The app in process on SQLite and PostgreSQL, over raw ASGI (a run whose model never answers stays open)."""

from __future__ import annotations

import asyncio
import json

import pytest

from asgi_client import AsgiClient
from stored_app import STORES, hung_world, ok

pytestmark = pytest.mark.anyio
SHARE = 2


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    responses = {"agent": {"max_foreground_per_tenant": SHARE}}
    async with hung_world(request, tmp_path, agent=True, responses=responses) as (w, sim, _, server):
        yield w, sim, server


async def _tenant_with_server(w, server, name: str) -> tuple[str, dict]:
    tenant, key = await w.tenant(name)
    body = {"name": "tools", "url": server.url, "require_approval": "never"}
    await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/mcp-servers", json=body), 201)
    return key, {"model": "g", "input": "hi", "stream": True, "tools": [{"type": "mcp", "server_label": "tools"}]}


async def _reached(sim, count: int) -> None:
    """Polled: `count` model calls reached the upstream (each a run in progress, waiting for its answer)."""
    for _ in range(600):
        if sim.state.stats.requests >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sim.state.stats.requests} model calls reached the upstream, not {count}")


async def test_a_tenant_past_its_share_of_agent_runs_gets_a_429_and_others_are_not_held(world):
    w, sim, server = world
    acme_key, acme_run = await _tenant_with_server(w, server, "acme")
    other_key, other_run = await _tenant_with_server(w, server, "other")
    runs = [AsgiClient(w.app, acme_key, "POST", "/v1/responses", acme_run) for _ in range(SHARE)]
    try:
        await _reached(sim, SHARE)  # both of acme's runs are in progress
        refused = AsgiClient(w.app, acme_key, "POST", "/v1/responses", acme_run)
        assert await refused.status() == 429
        await refused.ended()
        err = json.loads(bytes(refused.body))["error"]
        assert err["code"] == "too_many_agent_runs" and err["type"] == "requests"
        assert "responses.agent.max_foreground_per_tenant" in err["message"] and err["param"] is None
        assert sim.state.stats.requests == SHARE  # the refused run called nothing

        runs.append(AsgiClient(w.app, other_key, "POST", "/v1/responses", other_run))  # another tenant's share
        await _reached(sim, SHARE + 1)

        await runs.pop(0).cancel()  # a run that ends (here: cancelled, as at a hang-up) gives its place back
        runs.append(AsgiClient(w.app, acme_key, "POST", "/v1/responses", acme_run))
        await _reached(sim, SHARE + 2)
        assert not any(r.started.done() for r in runs)  # (all in progress: none was refused)
    finally:
        for r in runs:
            await r.cancel()
