"""Hostile JSON on every admin route that takes a body, in process (SQLite), driven by the route registry (a
route added later is covered too): never a 5xx, every refusal a 4xx in OpenAI's error envelope; a body of
more than dispatch.MAX_VALUES values is a 413 before any decode (a handler walks what it was given on the
event loop: 350,000 empty roles held it ~30 ms); and a large body is parsed on the big-bodies pool, as the
model doors' are, not on the event loop."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from typing import Any

import httpx
import msgspec
import pytest

from multihome.api import big_bodies
from multihome.api.admin import dispatch
from multihome.api.admin.registry import ROUTES
from multihome.api.admin.route import Route
from multihome.schema import admin_fields, json_values
from stored_app import stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-admin-hostile-bodies"
ENV = "MH_TEST_ADMIN_HOSTILE_BODIES"
DEADLINE_S = 20.0
WRITES = [route for route in ROUTES if route.body is not None]

# Raw JSON text of hostile values, put in every field of each route's body (some are not JSON at all).
VALUES: dict[str, bytes] = {
    "huge int": b"1" + b"0" * 40,
    "huge negative int": b"-1" + b"0" * 40,
    "2^64": b"18446744073709551616",
    "1e400": b"1e400",
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
    "lone surrogate": b'"\\ud800"',
    "lone low surrogate": b'"x\\udc00y"',
    "NUL and controls": b'"a\\u0000b\\u001b"',
    "invalid utf-8": b'"\xff\xfe"',
    "object": b'{"a":1}',
    "array": b'[1,"x",null]',
    "null": b"null",
    "true": b"true",
    "float": b"0.5",
    "negative": b"-1",
    "long string": json.dumps("Q" * 5000).encode(),
    "deep array": b"[" * 5000 + b"]" * 5000,
}
# Whole bodies that no admin route takes.
WHOLE: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n",
    "not an object": b"[1,2]",
    "a string": b'"x"',
    "NaN": b"NaN",
    "truncated": b'{"name":"x"',
    "trailing garbage": b'{"name":"x"} x',
    "two objects": b"{}{}",
    "duplicate keys": b'{"name":"x","name":5,"scope":"tenant","scope":[]}',
    "deep object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "utf-16": '{"name":"x"}'.encode("utf-16"),
    "invalid utf-8 key": b'{"\xff":1}',
    "too many values": b'{"x":[' + b",".join([b"0"] * dispatch.MAX_VALUES) + b"]}",
}


def _path(route: Route, tenant: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: tenant if m.group(1) == "tenant" else "x" * 24, route.path)


def _fields(route: Route) -> list[str]:
    fields: set[str] = set()
    for member in getattr(route.body, "__args__", (route.body,)):  # a union of bodies: each one's fields
        fields.update(getattr(member, "__struct_fields__", ()))
    return sorted(fields)


def _refusal(resp: httpx.Response, what: str) -> None:
    """A 4xx in OpenAI's error envelope, repeating at most 64 characters of a client value."""
    assert 400 <= resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:300]}"
    body = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"], f"{what}: {resp.text[:300]}"
    assert "Q" * 65 not in resp.text, f"{what}: echoes a long value"


async def _tenant(client: httpx.AsyncClient) -> str:
    made = await client.post(
        "/admin/v1/tenants", json={"name": "hostile"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert made.status_code == 201, made.text
    return made.json()["id"]


async def test_every_admin_route_with_a_body_refuses_hostile_json_with_a_4xx(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, ADMIN_KEY)
    json_headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    async with stored_app(f"sqlite+aiosqlite:///{tmp_path}/mh.db", ENV) as (client, _app):
        tenant = await _tenant(client)
        for route in WRITES:
            path = _path(route, tenant)
            for name, body in WHOLE.items():
                what = f"{route.method} {route.path} body={name}"
                _refusal(await client.request(route.method, path, content=body, headers=json_headers), what)
            for ctype in ("text/plain", "application/x-www-form-urlencoded"):
                what = f"{route.method} {route.path} content-type {ctype}"
                headers = {**json_headers, "content-type": ctype}
                _refusal(await client.request(route.method, path, content=b"name=x", headers=headers), what)
            for field in _fields(route):
                for name, raw in VALUES.items():
                    what = f"{route.method} {route.path} {field}={name}"
                    body = b'{"' + field.encode() + b'":' + raw + b"}"
                    resp = await client.request(route.method, path, content=body, headers=json_headers)
                    assert resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:300]}"
                    if resp.status_code >= 400:
                        _refusal(resp, what)


@pytest.mark.parametrize("route", WRITES, ids=[route.name for route in WRITES])
async def test_an_admin_body_of_too_many_values_is_a_413(route, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, ADMIN_KEY)
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    async with stored_app(f"sqlite+aiosqlite:///{tmp_path}/mh.db", ENV) as (client, _app):
        tenant = await _tenant(client)
        # Within the admin API's 1 MiB and the model doors' count: a handler would walk every one of them.
        body = b'{"metadata":{"m":[' + b",".join([b'""'] * (dispatch.MAX_VALUES + 1)) + b"]}}"
        resp = await client.request(route.method, _path(route, tenant), content=body, headers=headers)
    _refusal(resp, route.name)
    assert (resp.status_code, resp.json()["error"]["code"]) == (413, "too_many_values")
    assert f"more than {dispatch.MAX_VALUES:,} JSON values" in resp.json()["error"]["message"]


async def test_a_policy_near_the_largest_is_taken(tmp_path, monkeypatch):
    # 100 rules of three lists of 60 entries, ~18,500 values (a policy holds at most 20,000: storage/policies.py):
    # the largest admin bodies a route takes are within the bound.
    monkeypatch.setenv(ENV, ADMIN_KEY)
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    dimensions = ("providers", "regions", "model_groups")
    rules = [
        {"effect": "deny", **{name: [f"{name[0]}{i}-{j}" for j in range(60)] for name in dimensions}}
        for i in range(admin_fields.RULES_MAX)
    ]
    body = msgspec.json.encode({"scope": "tenant", "rules": rules})
    assert json_values.marks(body, 10**9) > 18_000
    async with stored_app(f"sqlite+aiosqlite:///{tmp_path}/mh.db", ENV) as (client, _app):
        tenant = await _tenant(client)
        made = await client.post(
            f"/admin/v1/tenants/{tenant}/policies",
            content=body,
            headers={**headers, "content-type": "application/json"},
        )
    assert made.status_code == 201, made.text
    assert made.json()["rules"]["egress"] == rules


async def test_a_small_call_is_answered_while_a_large_admin_body_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, ADMIN_KEY)
    started, small_answered = threading.Event(), threading.Event()
    released: list[bool] = []
    real = dispatch._decode

    def decode(raw: bytes, route: Route) -> Any:
        if len(raw) > big_bodies.OFF_LOOP_OVER:
            started.set()
            # Held until the small call was answered: on the loop, the small call cannot be.
            released.append(small_answered.wait(DEADLINE_S))
        return real(raw, route)

    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with stored_app(f"sqlite+aiosqlite:///{tmp_path}/mh.db", ENV) as (client, _app):
        monkeypatch.setattr(dispatch, "_decode", decode)
        big = {"name": "big", "metadata": {"text": "x" * 2 * big_bodies.OFF_LOOP_OVER}}
        large = asyncio.create_task(client.post("/admin/v1/tenants", json=big, headers=headers))
        deadline = time.monotonic() + DEADLINE_S
        while not started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert started.is_set(), "the large body was not parsed"
        small = await client.get("/admin/v1/tenants", headers=headers)
        small_answered.set()
        done = await large
    assert small.status_code == 200, small.text
    assert released == [True], "the small call was answered only after the large body was released"
    assert done.status_code < 500, done.text
