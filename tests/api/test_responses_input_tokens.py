"""`POST /v1/responses/input_tokens` (the SDKs' `responses.input_tokens.count`): the gateway's estimate of a
turn's prompt, its stored context included, read as a create reads it; no upstream is called. Hostile
bodies and ids are 4xx in OpenAI's envelope. The official openai SDK against the app in process, on SQLite
and PostgreSQL."""

from __future__ import annotations

import openai
import pytest

from stored_app import STORES, param_world, sdk_client

pytestmark = pytest.mark.anyio
PATH = "/v1/responses/input_tokens"


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    async with param_world(request, tmp_path) as parts:
        yield parts


async def test_the_count_takes_in_the_chain_and_the_conversation_and_calls_no_upstream(world):
    world, sim, transport = world
    _, key = await world.tenant("counting")
    client = sdk_client(key, transport)
    first = await client.responses.create(model="g", input="Remember the word heron, and the word egret too")
    conversation = await client.conversations.create(items=[{"role": "user", "content": "a long story " * 20}])
    called = len(sim.state.log)
    alone = await client.responses.input_tokens.count(model="g", input="What was the word?")
    chained = await client.responses.input_tokens.count(
        model="g", input="What was the word?", previous_response_id=first.id
    )
    held = await client.responses.input_tokens.count(
        model="g", input="What was the word?", conversation=conversation.id
    )
    assert alone.object == "response.input_tokens" and alone.input_tokens > 0
    assert alone.input_tokens < chained.input_tokens < held.input_tokens  # the story is the longest context
    with_instructions = await client.responses.input_tokens.count(
        model="g", input="What was the word?", instructions="Answer in one word, in capitals."
    )
    assert with_instructions.input_tokens > alone.input_tokens
    assert len(sim.state.log) == called  # nothing was sent upstream


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "nope", "input": "hi"}, 404, "model", "model_not_found"),
        ({"input": "hi"}, 400, None, None),
        ({"model": "g", "input": "hi", "previous_response_id": "resp_unknown"}, 400, "previous_response_id", None),
        ({"model": "g", "input": "hi", "conversation": "conv_unknown"}, 404, "conversation", None),
        ({"model": "g", "input": []}, 400, "input", None),
        ({"model": "g", "input": "hi", "bogus": 1}, 400, "bogus", "unknown_parameter"),
    ],
)
async def test_a_bad_count_is_a_4xx_in_openais_envelope(world, body, status, param, code):
    world, _, _ = world
    _, key = await world.tenant("hostile")
    resp = await world.call("POST", PATH, key, json=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    not_json = await world.client.post(PATH, content=b"{not json", headers=auth)
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"


async def test_another_tenants_response_is_not_found_for_a_count(world):
    world, _, transport = world
    _, theirs = await world.tenant("theirs")
    _, mine = await world.tenant("mine")
    their_turn = await sdk_client(theirs, transport).responses.create(model="g", input="a secret of theirs")
    with pytest.raises(openai.BadRequestError) as info:
        await sdk_client(mine, transport).responses.input_tokens.count(
            model="g", input="hi", previous_response_id=their_turn.id
        )
    assert info.value.code == "previous_response_not_found"
