"""A tenant's calls on the conversation and memory routes (and Responses input_tokens counts) run at most
`max_concurrent_per_tenant` at once on a replica, `WAITING_FACTOR` times as many more wait their turn, and a call past those is a 429 in OpenAI's error format at once.
These routes cost no upstream call, so no rate limit or budget held them: one tenant's thousand concurrent
writes (here: adds whose bodies never arrive, each holding its call open) held every connection of the store's
pool that every tenant's stored state waits on. Another tenant's calls are not held. The app in process on
SQLite and PostgreSQL, over raw ASGI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from asgi_client import AsgiClient
from multihome.api.tenant_gate import WAITING_FACTOR
from multihome.state.store import StateStore
from stored_app import STORES, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-tenant-gate"
RUNNING = 1
HELD = RUNNING * (1 + WAITING_FACTOR)  # running, and those waiting
ROUTES = {
    "conversations": ("/v1/conversations", {"items": []}, "responses.max_concurrent_per_tenant"),
    # A count rebuilds a turn's stored context and costs nothing: held like the reads of stored state.
    "input_tokens": ("/v1/responses/input_tokens", {"model": "g", "input": "x"}, "responses.max_concurrent_per_tenant"),
    "memory": (
        "/v1/memory/records",
        {"agent_id": "a", "user_id": "u", "records": [{"text": "x"}]},
        "memory.max_concurrent_per_tenant",
    ),
}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_TENANT_GATE", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator:
    fields = {
        "responses": {"max_concurrent_per_tenant": RUNNING},
        "memory": {"max_concurrent_per_tenant": RUNNING},
    }
    async with stored_world(store_url(request, tmp_path), "MH_TEST_TENANT_GATE", ADMIN_KEY, **fields) as (w, _, _):
        yield w


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_tenant_past_its_share_of_calls_gets_a_429_and_others_are_not_held(world, route):
    w = world
    path, body, setting = ROUTES[route]
    _, acme_key = await w.tenant("acme")
    _, other_key = await w.tenant("other")
    primed = AsgiClient(w.app, acme_key, "POST", path, body)  # the key identified once: later calls reach the
    assert await primed.status() == 200  # gate in the order they were made
    await primed.ended()
    stalled = [AsgiClient(w.app, acme_key, "POST", path, body, body_held=True) for _ in range(HELD)]
    try:
        refused = AsgiClient(w.app, acme_key, "POST", path, body)
        assert await refused.status() == 429
        await refused.ended()
        err = json.loads(bytes(refused.body))["error"]
        assert err["code"] == "too_many_concurrent_requests" and err["type"] == "requests"
        assert setting in err["message"] and err["param"] is None

        theirs = AsgiClient(w.app, other_key, "POST", path, body)  # another tenant's calls run
        assert await theirs.status() == 200, bytes(theirs.body)
        await theirs.ended()
        assert not any(s.started.done() for s in stalled)  # (acme's stalled calls are still open)
    finally:
        for s in stalled:
            await s.leave()
    again = AsgiClient(w.app, acme_key, "POST", path, body)  # calls that ended gave their turns back
    assert await again.status() == 200
    await again.ended()


async def test_a_tenant_past_its_share_of_response_reads_gets_a_429(world, monkeypatch):
    """Reading a response (polling a background one) holds a store connection too: a tenant's reads whose store
    read is slow (here: held until the test lets it go) fill its share alone."""
    w = world
    acme, acme_key = await w.tenant("acme")
    _, other_key = await w.tenant("other")
    path = "/v1/responses/resp_0123456789abcdef"
    primed = AsgiClient(w.app, acme_key, "GET", path)
    assert await primed.status() == 404
    await primed.ended()
    release = asyncio.Event()
    read = StateStore.get_response

    async def slow_for_acme(self, tenant, response_id):
        if tenant == acme:
            await release.wait()
        return await read(self, tenant, response_id)

    monkeypatch.setattr(StateStore, "get_response", slow_for_acme)
    held = [AsgiClient(w.app, acme_key, "GET", path) for _ in range(HELD)]
    try:
        refused = AsgiClient(w.app, acme_key, "GET", path)
        assert await refused.status() == 429
        await refused.ended()
        assert json.loads(bytes(refused.body))["error"]["code"] == "too_many_concurrent_requests"
        theirs = AsgiClient(w.app, other_key, "GET", path)  # another tenant's read runs: the id is not its
        assert await theirs.status() == 404
        await theirs.ended()
    finally:
        release.set()
        assert [await h.status() for h in held] == [404] * HELD  # the held reads ran in turn
