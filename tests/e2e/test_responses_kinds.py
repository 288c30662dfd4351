"""The Responses API served by every provider kind behind one gateway (the fleet: OpenAI, Azure,
Anthropic, Bedrock, Gemini simulators, with storage, the local KMS and the audit trail): create,
retrieve, continue by previous_response_id, stream, and a function-call loop, each checked with the
official openai SDK and against what the provider's simulator was sent."""

from __future__ import annotations

import json

import openai
import pydantic
import pytest

from .fleet import CLIENT_KEY, fleet
from .stores import head_database

# (model group, the deployment the call is narrowed to, the simulator kind that serves it)
KINDS = [
    ("gpt-4o", "oa", "openai"),
    ("gpt-4o", "az", "azure"),
    ("claude", "an", "anthropic"),
    ("bedrock", "br", "bedrock"),
    ("gemini", "gm", "gemini"),
]
IDS = [kind for _, _, kind in KINDS]


class GetWeather(pydantic.BaseModel):
    """The weather in a city."""

    city: str


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("responses-kinds")
    head_database(request, "sqlite", tmp)  # fleet_config's file, at the head revision
    with fleet(tmp) as f:
        yield f


def sdk(world, deployment: str) -> openai.OpenAI:
    """A client whose calls may only be served by `deployment` (the x-multihome-deployments narrowing)."""
    return openai.OpenAI(
        base_url=world.url + "/v1",
        api_key=CLIENT_KEY,
        max_retries=0,
        timeout=20,
        default_headers={"x-multihome-deployments": deployment},
    )


def _sent(world, kind: str) -> str:
    return world.sims[kind].requests()[-1]["body"]


@pytest.mark.parametrize("group,deployment,kind", KINDS, ids=IDS)
def test_a_chain_streamed_and_stored_on_every_kind(world, group, deployment, kind):
    client = sdk(world, deployment)
    one = client.responses.create(model=group, input="the password is swordfish", instructions="Be brief.")
    assert one.status == "completed" and one.output_text and one.usage.output_tokens > 0
    with client.responses.stream(model=group, input="what was it?", previous_response_id=one.id) as stream:
        two = stream.get_final_response()
    assert two.status == "completed" and two.output_text
    sent = _sent(world, kind)
    assert "the password is swordfish" in sent and "what was it?" in sent and "Be brief." not in sent
    assert client.responses.retrieve(two.id).output_text == two.output_text
    assert [i.content[0].text for i in client.responses.input_items.list(two.id)] == ["what was it?"]


@pytest.mark.parametrize("group,deployment,kind", KINDS, ids=IDS)
def test_a_function_call_loop_on_every_kind(world, group, deployment, kind):
    client = sdk(world, deployment)
    first = client.responses.create(model=group, input="What is the weather in Lima?", tools=[WEATHER])
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)
    second = client.responses.create(
        model=group,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "foggy, 17C"}],
        tools=[WEATHER],
    )
    assert second.output_text and not [i for i in second.output if i.type == "function_call"]
    assert "foggy, 17C" in _sent(world, kind)


@pytest.mark.parametrize("group,deployment,kind", KINDS, ids=IDS)
def test_a_streamed_answer_gives_its_items_one_after_the_other_on_every_kind(world, group, deployment, kind):
    """As OpenAI streams them: an output item is done before the next one is added (a Claude answer says a
    sentence, then calls the tool), so a client that handles each item when it is done, in order, sees
    the items in the order of the final response's output."""
    with sdk(world, deployment).responses.stream(
        model=group, input="What is the weather in Lima?", tools=[openai.pydantic_function_tool(GetWeather)]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    items = [e for e in events if e.type in ("response.output_item.added", "response.output_item.done")]
    opened = [(e.type.rsplit(".", 1)[1], e.output_index) for e in items]
    assert opened == [(step, i) for i in range(len(final.output)) for step in ("added", "done")], opened
    for e in events:  # every event about an item comes while that item is open
        if hasattr(e, "item_id") and e.type != "response.output_item.added":
            index = e.output_index
            added = next(
                n for n, x in enumerate(events) if x.type == "response.output_item.added" and x.output_index == index
            )
            done = next(
                n for n, x in enumerate(events) if x.type == "response.output_item.done" and x.output_index == index
            )
            assert added < events.index(e) < done, (e.type, index)
    done_items = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.id for i in done_items] == [i.id for i in final.output]
    call = final.output[-1]
    assert call.type == "function_call" and call.parsed_arguments.city
