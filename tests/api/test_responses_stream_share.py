"""A tenant follows at most responses.background.max_streams_per_tenant background response streams at once on
a replica: each follower holds a connection and reads the store every poll, and one tenant attaching thousands
of `GET /v1/responses/{id}?stream=true` multiplied the reads every tenant's stored state waits on. Past its
share a resume is a 429 in OpenAI's error format, before anything is sent; another tenant's resume is not held
by it, and a follower that leaves gives its place back. The app in process on SQLite and PostgreSQL, driven over
raw ASGI (a follower of a response that never ends stays open); the upstream never answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from multihome.simulators import Fault
from stored_app import STORES, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-stream-share"
SHARE = 2


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_STREAM_SHARE", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    responses = {"background": {"max_streams_per_tenant": SHARE}}
    async with stored_world(store_url(request, tmp_path), "MH_TEST_STREAM_SHARE", ADMIN_KEY, responses=responses) as (
        w,
        sim,
        _,
    ):
        sim.state.faults.add(Fault(hang=True, times=100))
        yield w


class _Client:
    """One request to the app over ASGI, left open until `leave` (the client disconnects)."""

    def __init__(self, app, key: str, method: str, path: str, body: dict | None = None) -> None:
        self.started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.body = bytearray()
        self._gone = asyncio.Event()
        self._request = json.dumps(body).encode() if body is not None else b""
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"gw"), (b"authorization", f"Bearer {key}".encode())]
            + ([(b"content-type", b"application/json")] if body is not None else []),
            "client": ("127.0.0.1", 1),
            "server": ("gw", 80),
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict:
        if self._request is not None:
            request, self._request = self._request, None
            return {"type": "http.request", "body": request, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict) -> None:
        if message["type"] == "http.response.start" and not self.started.done():
            self.started.set_result(message["status"])
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def status(self) -> int:
        return await asyncio.wait_for(asyncio.shield(self.started), 30)

    async def events(self, count: int) -> None:
        for _ in range(600):
            if self.body.count(b"\n\n") >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"fewer than {count} events: {bytes(self.body)[:300]!r}")

    async def leave(self) -> None:
        self._gone.set()
        await asyncio.wait_for(self.task, 30)


async def _open_response(w, key: str) -> str:
    """A background response with `stream: true` whose run never ends; its creating stream left at once."""
    create = _Client(
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

    def resume(key: str, response_id: str) -> _Client:
        return _Client(w.app, key, "GET", f"/v1/responses/{response_id}?stream=true&starting_after=0")

    followers = [resume(acme_key, acme_id) for _ in range(SHARE)]
    try:
        assert [await f.status() for f in followers] == [200] * SHARE
        refused = resume(acme_key, acme_id)
        assert await refused.status() == 429
        await asyncio.wait_for(refused.task, 30)
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
