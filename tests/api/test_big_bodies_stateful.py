"""A large Conversations or memory body is parsed on the pool of api/big_bodies.py, as the model doors'
are: while one is being parsed (held here until a small call is answered, or a generous deadline passes),
a small call on the same loop is answered. On main they were parsed on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from multihome.api import big_bodies, memory
from multihome.api.responses import conversations
from stored_app import StoredWorld, stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-stateful-big-bodies"
DEADLINE_S = 20.0
TEXT = "x" * 2 * big_bodies.OFF_LOOP_OVER

DOORS = {
    "conversation": (
        "/v1/conversations",
        {"items": [{"type": "message", "role": "user", "content": TEXT}]},
        (conversations, "parse_create_conversation"),
    ),
    "conversation items": (
        "/v1/conversations/{conv}/items",
        {"items": [{"type": "message", "role": "user", "content": TEXT}]},
        (conversations, "parse_add_items"),
    ),
    "memory records": (
        "/v1/memory/records",
        {"agent_id": "a", "user_id": "u", "text": TEXT},
        (memory, "parse_create_records"),
    ),
    "memory search": (
        "/v1/memory/search",
        {"agent_id": "a", "user_id": "u", "query": TEXT},
        (memory, "parse_search"),
    ),
}


@pytest.mark.parametrize("door", DOORS)
async def test_a_small_call_is_answered_while_a_large_body_is_parsed(monkeypatch, tmp_path, door):
    monkeypatch.setenv("MH_TEST_STATEFUL_BIG_BODIES", ADMIN_KEY)
    path, big, (module, name) = DOORS[door]
    started, small_answered = threading.Event(), threading.Event()
    released: list[bool] = []
    real = getattr(module, name)

    def parse(body: bytes):
        if len(body) > big_bodies.OFF_LOOP_OVER:
            started.set()
            # Held until the small call was answered: on the loop, the small call cannot be.
            released.append(small_answered.wait(DEADLINE_S))
        return real(body)

    async with stored_app(f"sqlite+aiosqlite:///{tmp_path}/mh.db", "MH_TEST_STATEFUL_BIG_BODIES") as (client, app):
        world = StoredWorld(client, "", ADMIN_KEY, app)
        _, key = await world.tenant("t")
        conv = (await world.call("POST", "/v1/conversations", key, json={})).json()["id"]
        monkeypatch.setattr(module, name, parse)
        large = asyncio.create_task(world.call("POST", path.format(conv=conv), key, json=big))
        deadline = time.monotonic() + DEADLINE_S
        while not started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert started.is_set(), "the large body was not parsed"
        small = await world.call("GET", "/v1/models", key)
        small_answered.set()
        done = await large
    assert small.status_code == 200
    assert released == [True], "the small call was answered only after the large body was released"
    assert done.status_code < 500, done.text
