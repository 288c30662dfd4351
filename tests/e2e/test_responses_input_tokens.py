"""`POST /v1/responses/input_tokens` end to end with the official openai SDK (`client.responses.input_tokens
.count`), on SQLite and PostgreSQL: the gateway's estimate of a turn's input with its stored context, made
without calling a provider, storing or metering anything; a body, model, id or policy a create refuses is
refused the same. And the published Responses and chat paths the gateway does not serve (compaction, stored
chat completions) answer a 404 saying so, not a 405 that takes the path's word for an id."""

from __future__ import annotations

import time

import openai
import pytest

from multihome.schema.estimate import CHARS_PER_TOKEN, PER_MESSAGE_TOKENS
from openai_schemas import problems

from .test_responses import WEATHER, World, running_world


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    yield from running_world(request, tmp_path_factory)


def _upstream_calls(world: World) -> int:
    return sum(len(sim.requests()) for sim in world.sims.values())


def test_the_sdk_counts_a_turns_input_without_calling_a_provider(world):
    client = world.sdk()
    before = _upstream_calls(world)
    text = "x" * 400
    raw = client.responses.input_tokens.with_raw_response.count(model="gpt", input=text)
    assert raw.headers["x-request-id"].startswith("req_")
    counted = raw.parse()
    assert (counted.object, counted.input_tokens) == ("response.input_tokens", PER_MESSAGE_TOKENS + 400 // 4)
    assert problems("TokenCountsResource", raw.http_response.json()) == []
    told = client.responses.input_tokens.count(model="claude", input=text, instructions="y" * 40)
    assert told.input_tokens == 2 * PER_MESSAGE_TOKENS + 440 // CHARS_PER_TOKEN  # the instructions are a message
    with_tools = client.responses.input_tokens.count(model="gpt", input=text, tools=[WEATHER], tool_choice="auto")
    assert with_tools.input_tokens > counted.input_tokens  # a function's name, description and parameters count
    with world.http() as http:  # the published `?beta=true` variant is a query string on the same path
        resp = http.post("/v1/responses/input_tokens?beta=true", json={"model": "gpt", "input": text})
        assert resp.status_code == 200 and resp.json() == counted.model_dump()
    # A read-only (auditor) key calls no model, but counts, as it may ask count_tokens and route explain.
    admin = world.http(None)
    made = admin.post(f"/admin/v1/tenants/{world.tenants['acme']}/keys", json={"name": "aud", "roles": ["auditor"]})
    assert made.status_code == 201, made.text
    auditor = openai.OpenAI(base_url=world.gateway.url + "/v1", api_key=made.json()["key"], max_retries=0)
    assert auditor.responses.input_tokens.count(model="gpt", input=text).input_tokens == counted.input_tokens
    with pytest.raises(openai.PermissionDeniedError):
        auditor.responses.create(model="gpt", input=text, store=False)
    assert _upstream_calls(world) == before


def test_a_count_rebuilds_the_stored_context_as_a_turn_would(world):
    client = world.sdk()
    one = client.responses.create(model="claude", input="turn one: the code word is heron")
    by_chain = client.responses.input_tokens.count(model="gpt", input="and now?", previous_response_id=one.id)
    spelled = [
        {"role": "user", "content": "turn one: the code word is heron"},
        {"role": "assistant", "content": one.output_text},
        {"role": "user", "content": "and now?"},
    ]
    assert by_chain.input_tokens == client.responses.input_tokens.count(model="gpt", input=spelled).input_tokens

    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "My name is Ada."}])
    by_conv = client.responses.input_tokens.count(model="claude", input="What is my name?", conversation=conv.id)
    spelled = [{"role": "user", "content": "My name is Ada."}, {"role": "user", "content": "What is my name?"}]
    assert by_conv.input_tokens == client.responses.input_tokens.count(model="gpt", input=spelled).input_tokens
    assert len(client.conversations.items.list(conv.id).data) == 1  # nothing was added to it


def test_what_a_create_refuses_a_count_refuses_the_same(world):
    acme, globex = world.sdk("acme"), world.sdk("globex")
    mine = acme.responses.create(model="gpt", input="acme's secret plan")
    conv = acme.conversations.create(items=[{"type": "message", "role": "user", "content": "acme only"}])
    before = _upstream_calls(world)
    with pytest.raises(openai.BadRequestError) as refused:  # another tenant's response is not found
        globex.responses.input_tokens.count(model="gpt", input="go on", previous_response_id=mine.id)
    assert refused.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError) as missing:  # and neither is its conversation
        globex.responses.input_tokens.count(model="gpt", input="join it", conversation=conv.id)
    assert missing.value.body["param"] == "conversation"
    with pytest.raises(openai.NotFoundError) as unknown:
        acme.responses.input_tokens.count(model="no-such-group", input="x")
    assert unknown.value.code == "model_not_found"
    bad = [
        ({"model": "gpt", "input": "x", "frobnicate": 1}, "frobnicate"),
        ({"model": "gpt", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "gpt", "input": "x", "previous_response_id": "resp_1", "conversation": "conv_1"}, "conversation"),
        ({"model": "gpt", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"model": "gpt"}, "input"),
    ]
    with world.http() as http:
        for body, param in bad:
            for path in ("/v1/responses/input_tokens", "/v1/responses"):
                resp = http.post(path, json=body)
                assert resp.status_code == 400, (path, resp.text)
                assert resp.json()["error"]["param"] == param, (path, resp.text)
    assert _upstream_calls(world) == before


def test_a_model_group_policy_denies_is_refused_and_nothing_is_metered(world):
    client = world.sdk("initech")
    assert client.responses.input_tokens.count(model="claude", input="allowed yet").input_tokens > 0
    admin = world.http(None)
    tenant = world.tenants["initech"]
    policy = {"scope": "tenant", "rules": [{"effect": "deny", "model_groups": ["claude"]}], "description": "no claude"}
    resp = admin.post(f"/admin/v1/tenants/{tenant}/policies", json=policy)
    assert resp.status_code == 201, resp.text
    deadline = time.monotonic() + 10
    while True:  # replicas pick the policy up within storage.refresh_s
        try:
            client.responses.input_tokens.count(model="claude", input="denied now?")
        except openai.PermissionDeniedError as err:
            denied = err
            break
        assert time.monotonic() < deadline, "the policy never applied to the count"
        time.sleep(0.1)
    with pytest.raises(openai.PermissionDeniedError) as created:
        client.responses.create(model="claude", input="denied now?")
    assert (denied.code, denied.message) == (created.value.code, created.value.message)

    def calls() -> int:
        rows = admin.get(f"/admin/v1/tenants/{tenant}/usage", params={"group_by": "model_group"}).json()["data"]
        return sum(r["calls"] for r in rows)

    metered = calls()
    for _ in range(3):
        client.responses.input_tokens.count(model="gpt", input="counted, not metered")
    client.responses.create(model="gpt", input="one metered turn", store=False)
    deadline = time.monotonic() + 10
    while calls() < metered + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert calls() == metered + 1  # the turn, and none of the counts before it


def test_published_paths_not_served_say_so(world):
    """POST /v1/responses/compact and the stored chat completions (`/v1/chat/completions/{id}`) are 404s
    saying they are not served; GET /v1/chat/completions (the SDK's `chat.completions.list()`) a 405 saying
    so too."""
    client = world.sdk()
    with pytest.raises(openai.NotFoundError) as compact:
        client.responses.compact(model="gpt", input="squeeze this")
    assert compact.value.code == "unknown_url" and "does not compact responses" in compact.value.message
    with pytest.raises(openai.APIStatusError) as listed:  # its path is served with POST: a 405 naming it
        client.chat.completions.list()
    assert listed.value.status_code == 405 and listed.value.response.headers["allow"] == "POST"
    assert "keeps no chat completions" in listed.value.message
    for call in (
        lambda: client.chat.completions.retrieve("chatcmpl_1"),
        lambda: client.chat.completions.delete("chatcmpl_1"),
        lambda: client.chat.completions.messages.list("chatcmpl_1"),
    ):
        with pytest.raises(openai.NotFoundError) as stored:
            call()
        assert stored.value.code == "unknown_url" and "keeps no chat completions" in stored.value.message
        assert problems("ErrorResponse", stored.value.response.json()) == []
