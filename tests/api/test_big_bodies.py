"""A body over api/big_bodies.py's threshold is decoded on a worker thread: while large bodies are being
decoded (here held in their parse until the small call is answered, or a generous deadline passes),
a small call on the same loop is answered; at most THREADS large bodies are decoded at once; a
malformed large body is still OpenAI's 400. Before, every door parsed on the event loop: the small
call waited for every large body queued before it."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from builders import open_door, single, typed
from multihome.api import big_bodies
from multihome.api.anthropic import routes as anthropic_routes
from multihome.api.openai import chat, embeddings, explain
from multihome.api.responses import translate
from multihome.app import build_app
from multihome.schema import json_values

pytestmark = pytest.mark.anyio
DEADLINE_S = 20.0
BIG = big_bodies.OFF_LOOP_OVER + 1


def _big_chat(size: int = 2 * BIG, model: str = "no-such-model") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "x" * size}]}
    return json.dumps(body).encode()


def _client(gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw", timeout=120)


TEXT = "x" * 2 * BIG
# Each door, a large body to it, and the parse the test holds (for Responses: its translation into the
# chat request, the step after its own decode).
DOORS = {
    "chat": (
        "/v1/chat/completions",
        {"model": "no-such-model", "messages": [{"role": "user", "content": TEXT}]},
        (chat, "parse_chat"),
    ),
    "responses": ("/v1/responses", {"model": "no-such-model", "input": TEXT}, (translate, "parse_chat")),
    "anthropic": (
        "/v1/messages",
        {"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": TEXT}]},
        (anthropic_routes, "parse_messages"),
    ),
    "embeddings": ("/v1/embeddings", {"model": "no-such-model", "input": TEXT}, (embeddings, "parse_embeddings")),
    # Anthropic's count_tokens and route explain parsed every body on the loop.
    "count_tokens": (
        "/v1/messages/count_tokens",
        {"model": "no-such-model", "messages": [{"role": "user", "content": TEXT}]},
        (anthropic_routes, "parse_messages"),
    ),
    "explain": (
        "/v1/route/explain",
        {"model": "no-such-model", "messages": [{"role": "user", "content": TEXT}]},
        (explain, "parse_chat"),
    ),
}


@pytest.mark.parametrize("door", DOORS)
async def test_a_small_call_is_answered_while_large_bodies_are_decoded(monkeypatch, door):
    path, big, (module, name) = DOORS[door]
    gateway = build_app(typed(single(server=open_door())))
    started, small_answered = threading.Event(), threading.Event()
    lock = threading.Lock()
    decoding = 0
    most = 0
    released: list[bool] = []
    real = getattr(module, name)

    def parse(body: bytes, *args, **kwargs):
        nonlocal decoding, most
        if len(body) > big_bodies.OFF_LOOP_OVER:
            with lock:
                decoding += 1
                most = max(most, decoding)
            started.set()
            # Held until the small call was answered: on the loop, the small call cannot be.
            released.append(small_answered.wait(DEADLINE_S if not released else 0.2))
            with lock:
                decoding -= 1
        return real(body, *args, **kwargs)

    monkeypatch.setattr(module, name, parse)
    async with _client(gateway) as client:
        bigs = [
            asyncio.create_task(client.post(path, json=big))
            for _ in range(big_bodies.THREADS + 2)  # every thread busy and more queued
        ]
        deadline = time.monotonic() + DEADLINE_S
        while not started.is_set() and time.monotonic() < deadline:  # a large body is being decoded
            await asyncio.sleep(0.01)
        small = await client.post("/v1/chat/completions", json={"model": "no-such-model", "messages": []})
        small_answered.set()
        done = await asyncio.gather(*bigs)
    assert small.status_code == 400  # answered (its own 400: no messages), not held behind the large ones
    assert released and released[0] is True, "the small call was answered only after a large body was released"
    assert [r.status_code for r in done] == [404] * len(bigs), done[0].text  # parsed, then an unknown model
    assert most <= big_bodies.THREADS  # no more large bodies decoded at once than the pool has threads


@pytest.mark.parametrize(
    "path, body, code, param",
    [
        (
            "/v1/chat/completions",
            b'{"model": "g", "messages": [{"role": "user", "content": "' + b"x" * BIG,
            "invalid_json",
            None,
        ),
        (
            "/v1/chat/completions",
            _big_chat(model="g").replace(b'"messages"', b'"messages": 5, "m"'),
            "invalid_type",
            "messages",
        ),
        ("/v1/responses", b'{"model": "g", "input": "' + b"x" * BIG + b'", }', "invalid_json", None),
        ("/v1/embeddings", b'{"model": "g", "input": ["' + b"x" * BIG + b'", 5.5]}', "invalid_type", "input[1]"),
    ],
)
async def test_a_malformed_large_body_is_openais_400(path, body, code, param):
    gateway = build_app(typed(single(server=open_door())))
    async with _client(gateway) as client:
        response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code, error
    if param is not None:
        assert error["param"] == param
    assert len(error["message"]) < 1000  # the body is not echoed


async def test_a_malformed_large_anthropic_body_is_anthropics_400():
    gateway = build_app(typed(single(server=open_door())))
    body = b'{"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "' + b"x" * BIG
    async with _client(gateway) as client:
        response = await client.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "invalid_request_error"


MANY = json_values.MAX_VALUES + 1


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/embeddings", {"model": "g", "input": [1] * MANY}),
        ("/v1/chat/completions", {"model": "g", "messages": [{"role": "user", "content": "hi"}], "stop": [""] * MANY}),
        ("/v1/route/explain", {"model": "g", "input": [[1] * 1000] * (MANY // 1000 + 1)}),
        ("/v1/responses", {"model": "g", "input": "hi", "include": [""] * MANY}),
    ],
)
async def test_a_body_of_too_many_values_is_openais_413(path, body):
    gateway = build_app(typed(single(server=open_door())))
    async with _client(gateway) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "too_many_values"), error


async def test_a_body_of_too_many_values_is_anthropics_413():
    body = {
        "model": "g",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "stop_sequences": [""] * MANY,
    }
    gateway = build_app(typed(single(server=open_door())))
    async with _client(gateway) as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 413, response.text
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "request_too_large"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"])
async def test_a_large_body_that_arrives_in_pieces_is_joined_on_the_pool(monkeypatch, path):
    # Joining 29 MiB of 64 KiB pieces held the event loop ~25 ms (api/asgi.py read_body); bytes.join lets go of
    # the GIL on a pool thread.
    joined: list[bytes] = []
    real = big_bodies.BigBodies.run

    async def run(self, work):
        out = await real(self, work)
        if isinstance(out, bytes):
            joined.append(out)
        return out

    monkeypatch.setattr(big_bodies.BigBodies, "run", run)
    body = json.dumps({"model": "no-such-model", "max_tokens": 5, "input": TEXT, "messages": []}).encode()
    size = 64 * 1024

    async def pieces():
        for start in range(0, len(body), size):
            yield body[start : start + size]

    gateway = build_app(typed(single(server=open_door())))
    async with _client(gateway) as client:
        resp = await client.post(path, content=pieces(), headers={"content-type": "application/json"})
    assert resp.status_code < 500, resp.text
    assert joined == [body]
