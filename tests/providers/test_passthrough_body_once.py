"""An OpenAI-shaped upstream body is encoded once per call and upstream model, not once per attempt: a retry, or
a failover to another deployment of the same model, sends the same bytes (re-encoding a 29 MiB body held the
event loop ~11 ms an attempt); a deployment of another model gets its own body, naming its model."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from builders import NOWHERE, config, deployment, group, open_door, provider, typed
from multihome.app import build_app
from multihome.providers import passthrough
from multihome.schema.chat import parse_chat

pytestmark = pytest.mark.anyio


async def test_retries_and_failover_to_the_same_model_encode_the_body_once(monkeypatch):
    bodies: list[bytes] = []
    real = passthrough._encode

    def encode(value):
        out = real(value)
        if isinstance(value, dict):  # a whole upstream body (a model name alone is a str)
            bodies.append(out)
        return out

    monkeypatch.setattr(passthrough, "_encode", encode)
    cfg = config(
        server=open_door(),
        providers={"a": provider("openai", NOWHERE), "b": provider("openai", NOWHERE)},
        deployments={"da": deployment("a", "m"), "db": deployment("b", "m")},
        model_groups={"g": group("da", "db", retries=1, backoff_ms=1)},
    )
    gateway = build_app(typed(cfg))
    for service in gateway.services:
        await service.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw") as client:
            body = {"model": "g", "messages": [{"role": "user", "content": "x" * 1000}]}
            resp = await client.post("/v1/chat/completions", json=body)
    finally:
        for service in reversed(gateway.services):
            await service.close()
    assert resp.status_code == 503, resp.text
    attempts = resp.headers["x-multihome-attempts"]
    assert attempts.count("da;") == 2 and attempts.count("db;") == 2, attempts  # each tried, then retried
    assert len(bodies) == 1, f"the upstream body was encoded {len(bodies)} times"


async def test_another_upstream_model_gets_its_own_body():
    parsed = parse_chat(msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}]}))
    first = passthrough.chat_body(parsed, "m1")
    assert passthrough.chat_body(parsed, "m1") is first
    other = passthrough.chat_body(parsed, "m2")
    assert json.loads(first)["model"] == "m1" and json.loads(other)["model"] == "m2"
    assert json.loads(first)["messages"] == json.loads(other)["messages"]
