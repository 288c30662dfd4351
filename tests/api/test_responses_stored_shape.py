"""A Response stored before its `incomplete_details` and `error` were held to OpenAI's enums (an agent
limit as the reason, the gateway's own error code) reads back in them: the official SDK's strict types
refused the whole object. Which limit it was is kept in `incomplete_details.multihome.limit`. The app
in process on SQLite and PostgreSQL; the old rows stored as the store stores any response."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from multihome.state.service import StateService
from openai_schemas import problems
from stored_app import STORES, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-stored-shape"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_STORED_SHAPE", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_world(store_url(request, tmp_path), "MH_TEST_STORED_SHAPE", ADMIN_KEY) as (world, sim, transport):
        yield world, transport


async def _made(world) -> tuple:
    """(the world, a tenant, its key, an SDK client of it, the state service, a response it made, as stored):
    the stored row that each test copies into one of an older shape."""
    w, transport = world
    tenant, key = await w.tenant("acme")
    sdk = openai.AsyncOpenAI(
        api_key=key, base_url="http://gw/v1", http_client=httpx.AsyncClient(transport=transport), max_retries=0
    )
    made = await sdk.responses.create(model="g", input="hi")
    (state,) = [s for s in w.app.services if isinstance(s, StateService)]
    return w, tenant, key, sdk, state, await state.store.get_response(tenant, made.id)


async def test_an_old_response_with_reasons_of_the_gateways_own_reads_back_in_openais(world):
    w, tenant, key, sdk, state, stored = await _made(world)
    old = {
        "incomplete": {"status": "incomplete", "incomplete_details": {"reason": "max_steps"}, "error": None},
        "failed": {
            "status": "failed",
            "incomplete_details": None,
            "error": {"code": "all_deployments_failed", "message": "every deployment failed"},
        },
    }
    for name, fields in old.items():
        rid = f"resp_old{name}"
        response = {**stored.response, "id": rid, **fields}
        await state.store.put_response(dataclasses.replace(stored, id=rid, status=fields["status"], response=response))
        raw = (await w.call("GET", f"/v1/responses/{rid}", key)).json()
        assert not problems("Response", raw), problems("Response", raw)
        got = await sdk.responses.retrieve(rid)  # the SDK parses it
        assert got.id == rid and got.status == fields["status"]
        if name == "incomplete":
            assert raw["incomplete_details"] == {"reason": "max_output_tokens", "multihome": {"limit": "max_steps"}}
        else:
            assert raw["error"] == {"code": "server_error", "message": "every deployment failed"}


async def test_an_old_finished_background_response_cancelled_reads_back_in_openais_enums(world):
    # Agent runs, where the gateway's own limits ended responses, run in the background: a cancel of one
    # that ended answers with the response as it is, and it is read back as GET reads it.
    w, tenant, key, sdk, state, stored = await _made(world)
    rid = "resp_oldbackground"
    fields = {"status": "incomplete", "incomplete_details": {"reason": "max_spend"}, "error": None, "background": True}
    response = {**stored.response, "id": rid, **fields}
    await state.store.put_response(
        dataclasses.replace(stored, id=rid, status="incomplete", response=response, background={"request": {}})
    )
    got = await w.call("POST", f"/v1/responses/{rid}/cancel", key)
    assert got.status_code == 200, got.text
    raw = got.json()
    assert not problems("Response", raw), problems("Response", raw)
    assert raw["incomplete_details"] == {"reason": "max_output_tokens", "multihome": {"limit": "max_spend"}}


async def test_an_idempotent_retry_answered_with_an_old_response_reads_back_in_openais_enums(world):
    from multihome.state.idempotency import IdempotencyKeys, digest

    w, tenant, key, sdk, state, stored = await _made(world)
    rid = "resp_oldkeyed"
    fields = {"status": "incomplete", "incomplete_details": {"reason": "max_steps"}, "error": None}
    await state.store.put_response(
        dataclasses.replace(stored, id=rid, status="incomplete", response={**stored.response, "id": rid, **fields})
    )
    body = b'{"model": "g", "input": "again"}'
    keys = IdempotencyKeys(state.store.engine)  # the key a create of that body made rid with, before
    await keys.claim(tenant, "k-old", "responses", digest("responses", body))
    await keys.done(tenant, "k-old", 200, rid)
    headers = {"authorization": f"Bearer {key}", "idempotency-key": "k-old", "content-type": "application/json"}
    got = await w.client.post("/v1/responses", content=body, headers=headers)
    assert got.status_code == 200 and got.headers["idempotent-replayed"] == "true", got.text
    raw = got.json()
    assert raw["id"] == rid and not problems("Response", raw), problems("Response", raw)
