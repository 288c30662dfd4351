"""The query parameters of the Responses and Conversations reads, as OpenAI's published API defines them
(`include` on a response, its input items, a conversation's items and one of them, and on an add of
items): OpenAI's values are accepted however the client writes the array (`include=` or the SDKs'
`include[]=`), another is a 400 naming it in OpenAI's error shape, as a create's `include` is.
Was: any value at all was ignored, so a client's typo looked like a value that had worked."""

from __future__ import annotations

import openai
import pytest

from openai_schemas import problems
from stored_app import StoredWorld, stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-read-queries"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_READ_QUERIES", ADMIN_KEY)


@pytest.fixture
async def world(tmp_path):
    async with stored_app(f"sqlite+aiosqlite:///{tmp_path}/mh.db", "MH_TEST_READ_QUERIES") as (client, app):
        world = StoredWorld(client, "", ADMIN_KEY, app)
        _, key = await world.tenant("reader")
        resp = (await world.call("POST", "/v1/responses", key, json={"model": "g", "input": "hi"})).json()
        items = [{"type": "message", "role": "user", "content": "x"}]
        conv = (await world.call("POST", "/v1/conversations", key, json={"items": items})).json()["id"]
        item = (await world.call("GET", f"/v1/conversations/{conv}/items", key)).json()["data"][0]["id"]
        world.key, world.paths = (
            key,
            {  # type: ignore[attr-defined]
                ("GET", f"/v1/responses/{resp['id']}"),
                ("GET", f"/v1/responses/{resp['id']}/input_items"),
                ("GET", f"/v1/conversations/{conv}/items"),
                ("GET", f"/v1/conversations/{conv}/items/{item}"),
                ("POST", f"/v1/conversations/{conv}/items"),
            },
        )
        yield world


def _body(method: str) -> dict | None:
    return {"items": [{"type": "message", "role": "user", "content": "more"}]} if method == "POST" else None


@pytest.mark.parametrize("name", ["include", "include[]"])
async def test_openais_include_values_are_accepted(world, name):
    for method, path in sorted(world.paths):
        for value in ("message.output_text.logprobs", "reasoning.encrypted_content"):
            resp = await world.call(method, path, world.key, params={name: value}, json=_body(method))
            assert resp.status_code == 200, (path, resp.text)


@pytest.mark.parametrize("name", ["include", "include[]"])
@pytest.mark.parametrize("value", ["no.such.thing", "", "message.output_text.logprobs\x00", "x" * 5000])
async def test_another_include_value_is_a_400_naming_it(world, name, value):
    for method, path in sorted(world.paths):
        query = [(name, "reasoning.encrypted_content"), (name, value)]
        resp = await world.call(method, path, world.key, params=query, json=_body(method))
        assert resp.status_code == 400, (path, resp.text)
        assert not problems("ErrorResponse", resp.json())
        error = resp.json()["error"]
        assert error["param"] == "include[1]" and error["type"] == "invalid_request_error", error
        assert len(error["message"]) < 600  # the value echoed in part, not in full


async def test_the_official_sdk_sends_include_and_is_answered(world):
    """The SDK writes `include` as `include[]=…` (its query arrays are in brackets)."""
    client = openai.AsyncOpenAI(base_url="http://gw/v1", api_key=world.key, http_client=world.client, max_retries=0)
    resp = next(p for m, p in world.paths if p.startswith("/v1/responses/") and not p.endswith("input_items"))
    response_id = resp.split("/")[3]
    got = await client.responses.retrieve(response_id, include=["message.output_text.logprobs"])
    assert got.id == response_id
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.input_items.list(response_id, include=["nope"])  # type: ignore[list-item]
    assert caught.value.body["param"] == "include[0]"  # type: ignore[index]


async def test_a_long_cursor_or_deployment_name_is_echoed_by_its_start(world):
    """A memory list's unknown `after` and an unknown deployment in `x-multihome-deployments` were repeated
    whole (a 5 KB message for a 5 KB value); an error shows ECHO_MAX characters of what the client sent."""
    long = "A" * 5000 + "TAIL"
    ns = {"agent_id": "a", "user_id": "u"}
    await world.call("POST", "/v1/memory/records", world.key, json={**ns, "text": "likes tea"})
    resp = await world.call("GET", "/v1/memory/records", world.key, params={**ns, "after": long})
    chat = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {world.key}", "x-multihome-deployments": long}
    narrowed = await world.client.post("/v1/chat/completions", json=chat, headers=headers)
    for answer in (resp, narrowed):
        assert answer.status_code == 400, answer.text
        message = answer.json()["error"]["message"]
        assert "A" * 64 + "…" in message and "TAIL" not in message and len(message) < 600, message
