"""A usage summary's `?page=` is a `next_page` the gateway made, and anything else a client sends as one is a 400
naming `page`: a token of the right width whose values the database cannot bind (a number for a text column, one
past 64 bits, a NUL or a lone surrogate in text) was a 500 on PostgreSQL (and on SQLite for the last three).
A forged token of the right shape shows the tenant's own rows only. The app in process, on SQLite and
PostgreSQL, its calls made with the official openai SDK."""

from __future__ import annotations

import base64
import json

import pytest

from admin_http import error, ok
from stored_app import STORES, param_world, sdk_client

pytestmark = pytest.mark.anyio


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    async with param_world(request, tmp_path) as parts:
        yield parts


def _token(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


FORGED = [
    [1, 1, 1],  # numbers for the text columns
    ["g", "x", "USD"],  # text for the no-group flag
    ["g", 10**30, "USD"],  # past 64 bits
    [-(10**30), 1, "USD"],
    ["g", 2, "USD"],  # the flag is 0 or 1
    ["g", True, "USD"],
    ["g", 1.0, "USD"],
    ["g\u0000", 1, "USD"],  # NUL
    ["\ud800", 1, "USD"],  # a lone surrogate
    ["g", 1, "US\u0000D"],
    [None, 1, "USD"],
]


async def test_a_forged_page_token_is_a_400_and_a_real_one_walks_on(world):
    w, _, transport = world
    tenant, key = await w.tenant("acme")
    other, other_key = await w.tenant("globex")
    for k in (key, other_key):
        for _ in range(2):
            await sdk_client(k, transport).chat.completions.create(
                model="g", messages=[{"role": "user", "content": "hi"}]
            )
    for group_by in ("model_group", "key", "team"):
        for values in FORGED:
            page = _token(values)
            err = error(await w.call("GET", f"/admin/v1/tenants/{tenant}/usage?group_by={group_by}&page={page}"), 400)
            assert (err["param"], err["code"]) == ("page", "invalid_value"), (values, err)
    shaped = _token(["", 0, ""])  # before every row: the tenant's own, and only them
    listed = await ok(await w.call("GET", f"/admin/v1/tenants/{tenant}/usage?group_by=key&page={shaped}", key))
    assert [entry["calls"] for entry in listed["data"]] == [2], listed
    walked = await ok(await w.call("GET", "/admin/v1/usage?group_by=tenant&limit=1"))
    second = await ok(await w.call("GET", f"/admin/v1/usage?group_by=tenant&limit=1&page={walked['next_page']}"))
    assert {walked["data"][0]["tenant"], second["data"][0]["tenant"]} == {tenant, other}
