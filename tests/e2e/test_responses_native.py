"""The Responses API sent natively to upstreams that speak it (OpenAI, Azure): the rebuilt context goes
to their own `/responses` with `store: false`, checked in the simulators' record of what they were sent,
and a conversation begun natively continues on a translated provider when the native one is down."""

from __future__ import annotations

import json

import openai
import pytest

from builders import deployment

from .fleet import CLIENT_KEY, fleet
from .stores import head_database


def _edit(config: dict) -> None:
    deps = config["deployments"]
    deps["oa-chat"] = deployment("openai", "gpt-4o-chatonly", responses_api="translated")
    groups = config["model_groups"]
    groups["chat-only"] = {"deployments": ["oa-chat"], "retries": 0}
    groups["chat-then-native"] = {"deployments": ["oa-chat", "oa"], "retries": 0}
    groups["az-then-claude"] = {"deployments": ["az", "an"], "retries": 0}


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("responses-native")
    head_database(request, "sqlite", tmp)  # fleet_config's file, at the head revision
    with fleet(tmp, edit=_edit) as f:
        yield f


def sdk(world, deployment: str | None = None) -> openai.OpenAI:
    headers = {"x-multihome-deployments": deployment} if deployment else {}
    return openai.OpenAI(
        base_url=world.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20, default_headers=headers
    )


def _last(world, kind: str) -> dict:
    return world.sims[kind].requests()[-1]


@pytest.mark.parametrize(
    "deployment,kind,path", [("oa", "openai", "/v1/responses"), ("az", "azure", "/openai/v1/responses")]
)
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_turn_two_is_sent_natively_with_the_whole_context(world, deployment, kind, path, stream):
    client = sdk(world, deployment)
    one = client.responses.create(model="gpt-4o", input="the password is swordfish", instructions="Be brief.")
    assert one.status == "completed" and one.output_text and one.usage.input_tokens > 0
    assert one.id.startswith("resp_") and one.store is True and one.model == "gpt-4o"
    if stream:
        with client.responses.stream(model="gpt-4o", input="what was it?", previous_response_id=one.id) as s:
            kinds = [event.type for event in s]
            two = s.get_final_response()
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        assert "response.output_text.delta" in kinds
    else:
        two = client.responses.create(model="gpt-4o", input="what was it?", previous_response_id=one.id)
    assert two.status == "completed" and two.output_text and two.previous_response_id == one.id
    sent = _last(world, kind)
    assert sent["path"].split("?")[0] == path
    body = json.loads(sent["body"])
    assert body["store"] is False and "previous_response_id" not in body and "conversation" not in body
    texts = json.dumps(body["input"])
    # The whole context: turn 1's input and answer, then turn 2's input (instructions are per call, not carried).
    assert "the password is swordfish" in texts and one.output_text in texts and "what was it?" in texts
    assert "Be brief." not in json.dumps(body)
    assert body["input"][-1]["content"][0]["text"] == "what was it?"
    assert all("id" not in item for item in body["input"])  # the gateway's ids mean nothing upstream
    stored = client.responses.retrieve(two.id)
    assert stored.output_text == two.output_text and stored.usage.output_tokens == two.usage.output_tokens


def test_a_function_call_loop_natively(world):
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    client = sdk(world, "az")
    first = client.responses.create(model="gpt-4o", input="What is the weather in Lima?", tools=[tool])
    call = next(item for item in first.output if item.type == "function_call")
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "foggy, 17C"}],
        tools=[tool],
    )
    assert second.output_text
    body = json.loads(_last(world, "azure")["body"])
    types = [item.get("type", "message") for item in body["input"]]
    assert types == ["message", "function_call", "function_call_output"]
    assert body["tools"][0]["name"] == "get_weather"


def test_a_deployment_set_to_translated_gets_a_chat_call(world):
    before = len(world.sims["openai"].requests())
    out = sdk(world).responses.create(model="chat-only", input="hello there")
    assert out.output_text
    sent = world.sims["openai"].requests()[before:]
    assert [r["path"] for r in sent] == ["/v1/chat/completions"]


def test_reasoning_goes_back_encrypted_to_a_native_upstream_and_as_its_summary_to_another(world):
    reasoning = {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "The user keeps bees; answer about bees."}],
        "encrypted_content": "gAAAAB-opaque-reasoning-state",
    }
    items = [
        {"type": "message", "role": "user", "content": "I keep bees."},
        reasoning,
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Lovely!"}]},
    ]
    client = sdk(world)
    conv = client.conversations.create(items=items)
    sdk(world, "oa").responses.create(model="gpt-4o", input="what do I keep?", conversation=conv.id)
    body = json.loads(_last(world, "openai")["body"])
    assert body["include"] == ["reasoning.encrypted_content"]
    sent = [i for i in body["input"] if i.get("type") == "reasoning"]
    assert len(sent) == 1 and sent[0]["encrypted_content"] == reasoning["encrypted_content"]
    client.responses.create(model="claude", input="and again?", conversation=conv.id)
    text = _last(world, "anthropic")["body"]
    assert "The user keeps bees; answer about bees." in text and "opaque-reasoning-state" not in text


def test_a_function_name_over_64_characters_passes_over_a_chat_deployment_to_a_native_one(world):
    """The primary deployment is reached through chat completions (64 characters at most), the second
    natively: the turn is served by the second, named as it is, and the first is listed as skipped; before,
    the primary's refusal was the call's 400."""
    name = "g" * 100
    tool = {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}
    raw = sdk(world).responses.with_raw_response.create(model="chat-then-native", input="hi", store=False, tools=[tool])
    assert raw.parse().status == "completed"
    assert raw.headers["x-multihome-deployment"] == "oa"
    assert "oa-chat" in raw.headers["x-multihome-attempts"]
    assert json.loads(_last(world, "openai")["body"])["tools"][0]["name"] == name
    short = sdk(world).responses.with_raw_response.create(
        model="chat-then-native", input="hi", store=False, tools=[{**tool, "name": "g" * 64}]
    )
    assert short.headers["x-multihome-deployment"] == "oa-chat"  # a name that fits goes to the primary


def test_failover_from_native_azure_to_translated_anthropic_keeps_the_conversation(world):
    """Last in this module: it stops the Azure simulator."""
    client = sdk(world)
    conv = client.conversations.create()
    one = client.responses.create(model="az-then-claude", input="my ship is called Nautilus", conversation=conv.id)
    assert _last(world, "azure")["path"] == "/openai/v1/responses"
    world.sims["azure"].stop()
    before = len(world.sims["anthropic"].requests())
    two = client.responses.create(model="az-then-claude", input="what is my ship called?", conversation=conv.id)
    assert two.status == "completed" and two.output_text
    sent = world.sims["anthropic"].requests()[before:]
    assert len(sent) == 1 and sent[0]["path"] == "/v1/messages"
    text = sent[0]["body"]
    assert "my ship is called Nautilus" in text and one.output_text in text and "what is my ship called?" in text
    items = [i.type for i in client.conversations.items.list(conv.id, order="asc")]
    assert items == ["message"] * 4
    # A third turn, chained by id from the translated one, still has everything.
    three = client.responses.create(model="az-then-claude", input="and again?", previous_response_id=two.id)
    assert three.output_text


def test_a_function_name_over_64_characters_reaches_a_native_upstream_and_is_a_400_for_a_translated_one(world):
    """OpenAI's Responses schema allows function names of up to 128 characters, chat completions 64: a native
    deployment is sent the name as is; one reached through chat completions gets a 400 naming the tool before
    anything is sent (not the upstream's refusal)."""
    name = "f" * 100
    tool = {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}
    served = sdk(world, "oa").responses.create(model="gpt-4o", input="hi", store=False, tools=[tool])
    assert served.status == "completed"
    assert json.loads(_last(world, "openai")["body"])["tools"][0]["name"] == name
    sent_before = len(world.sims["openai"].requests())
    with pytest.raises(openai.BadRequestError) as info:
        sdk(world).responses.create(model="chat-only", input="hi", store=False, tools=[tool])
    assert (info.value.param, info.value.code) == ("tools[0].name", "string_above_max_length")
    assert "oa-chat" in info.value.message and "natively" in info.value.message
    assert len(world.sims["openai"].requests()) == sent_before  # nothing was sent upstream
