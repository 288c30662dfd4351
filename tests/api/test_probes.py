"""docs/api.md "GET /healthz, GET /readyz" and docs/serving.md "Probes", through the ASGI app's own lifespan:
before start-up is complete `/healthz` answers 200 (the process serves) and `/readyz` 503 `starting`; once
the lifespan's start-up is complete `/readyz` answers 200 `ok`. Neither needs a key. (`draining` after a
stop began: tests/api/test_drain.py.)"""

from __future__ import annotations

import asyncio
import json

import pytest

from builders import api_keys, single, typed
from multihome.app import build_app

pytestmark = pytest.mark.anyio


async def _get(app, path: str) -> tuple[int, dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_readyz_says_starting_until_the_lifespan_start_up_is_complete(monkeypatch):
    monkeypatch.setenv("K", "client-key")
    app = build_app(typed(single(server=api_keys("K"), names=("oa", "d", "gpt-4o"))))
    assert await _get(app, "/healthz") == (200, {"status": "ok"})
    assert await _get(app, "/readyz") == (503, {"status": "starting"})

    inbox: asyncio.Queue[dict] = asyncio.Queue()
    outbox: asyncio.Queue[dict] = asyncio.Queue()
    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 60))["type"] == "lifespan.startup.complete"
    try:
        assert await _get(app, "/readyz") == (200, {"status": "ok"})
        assert await _get(app, "/healthz") == (200, {"status": "ok"})
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 60))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(lifespan, 60)
