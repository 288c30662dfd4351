"""A tenant follows at most responses.background.max_streams_per_tenant background response streams at once on
a replica: each follower holds a connection and reads the store every poll, and one tenant attaching thousands
of `GET /v1/responses/{id}?stream=true` multiplied the reads every tenant's stored state waits on. Past its
share a resume is a 429 in OpenAI's error format, before anything is sent; another tenant's resume is not held
by it, and a follower that leaves gives its place back. The app in process on SQLite and PostgreSQL, driven over
raw ASGI (a follower of a response that never ends stays open); the upstream never answers."""

from __future__ import annotations

import json

import pytest

from asgi_client import AsgiClient
from stored_app import STORES, hung_world

pytestmark = pytest.mark.anyio
SHARE = 2


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    async with hung_world(request, tmp_path, responses={"background": {"max_streams_per_tenant": SHARE}}) as world:
        yield world[0]


async def _open_response(w, key: str) -> str:
    """A background response with `stream: true` whose run never ends; its creating stream left at once."""
    create = AsgiClient(
        w.app, key, "POST", "/v1/responses", {"model": "g", "input": "hi", "background": True, "stream": True}
    )
    assert await create.status() == 200
    await create.events(1)  # response.created, which names it
    first = bytes(create.body).split(b"\n\n")[0]
    response_id = json.loads(first.split(b"data: ", 1)[1])["response"]["id"]
    await create.leave()
    return response_id


async def test_a_tenant_past_its_share_of_streams_gets_a_429_and_others_are_not_held(world):
    w = world
    _, acme_key = await w.tenant("acme")
    _, other_key = await w.tenant("other")
    acme_id = await _open_response(w, acme_key)
    other_id = await _open_response(w, other_key)

    def resume(key: str, response_id: str) -> AsgiClient:
        return AsgiClient(w.app, key, "GET", f"/v1/responses/{response_id}?stream=true&starting_after=0")

    followers = [resume(acme_key, acme_id) for _ in range(SHARE)]
    try:
        assert [await f.status() for f in followers] == [200] * SHARE
        refused = resume(acme_key, acme_id)
        assert await refused.status() == 429
        await refused.ended()
        err = json.loads(bytes(refused.body))["error"]
        assert err["code"] == "too_many_response_streams" and err["type"] == "requests"
        assert "responses.background.max_streams_per_tenant" in err["message"] and err["param"] is None

        theirs = resume(other_key, other_id)  # another tenant's share is its own
        assert await theirs.status() == 200
        await theirs.leave()

        await followers.pop().leave()  # a follower that leaves gives its place back
        again = resume(acme_key, acme_id)
        assert await again.status() == 200
        followers.append(again)
    finally:
        for f in followers:
            await f.leave()
