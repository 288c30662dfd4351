"""The OpenAI and Azure simulators' native Responses API, through the official SDK.

Every object and event is also validated against the SDK's own pydantic types (the SDK itself
builds them without validation, so a missing required key would otherwise pass unnoticed)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from .sim_helpers import AZURE_KEY, OPENAI_KEY

EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


@pytest.fixture(params=["openai", "azure"])
def client(request, osim, asim) -> openai.OpenAI:
    if request.param == "openai":
        return openai.OpenAI(base_url=osim.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=10)
    # Azure's v1 API: the plain OpenAI client on /openai/v1/ (as Microsoft's docs show it).
    return openai.OpenAI(base_url=asim.url + "/openai/v1/", api_key=AZURE_KEY, max_retries=0, timeout=10)


def _validated(response) -> Response:
    return Response.model_validate(response.model_dump(mode="json", exclude_unset=True))


def test_text_reply_is_a_valid_response(client):
    r = client.responses.create(model="gpt-4o", input="What is the capital of France?", store=False)
    assert _validated(r).id == r.id
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.output_text.startswith("Hello from ") and "What is the capital of France?" in r.output_text
    assert r.output[0].type == "message" and r.output[0].id.startswith("msg_")
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.store is False and r.incomplete_details is None


def test_instructions_and_items_become_the_context(client):
    r = client.responses.create(
        model="gpt-4o",
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "first question"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "first answer"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "second question"}]},
        ],
        store=False,
    )
    assert "second question" in r.output_text
    assert r.instructions == "Be brief."


def test_function_call_loop(client):
    first = client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[WEATHER], store=False)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.id.startswith("fc_")
    assert call.call_id.startswith("call_") and isinstance(json.loads(call.arguments), dict)
    second = client.responses.create(
        model="gpt-4o",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
        tools=[WEATHER],
        store=False,
    )
    assert second.output[0].type == "message"
    assert "sunny, 21 C" in second.output_text and call.call_id in second.output_text


def test_max_output_tokens_makes_it_incomplete(client):
    r = client.responses.create(model="gpt-4o", input="word " * 200, max_output_tokens=16, store=False)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens <= 16


def test_json_schema_format(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = client.responses.create(
        model="gpt-4o",
        input="Where?",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
        store=False,
    )
    assert set(json.loads(r.output_text)) == {"city"}


def test_text_stream_order_and_sequence_numbers(client):
    events = list(client.responses.create(model="gpt-4o", input="Say hello to the stream", store=False, stream=True))
    for e in events:
        EVENTS.validate_python(e.model_dump(mode="json", exclude_unset=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].response.output_text == text and events[-1].response.usage.output_tokens > 0
    assert events[0].response.usage is None and events[0].response.status == "in_progress"


def test_sdk_stream_helper_accumulates_a_function_call(client):
    with client.responses.stream(model="gpt-4o", input="Weather in Rome?", tools=[WEATHER], store=False) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.content_part.added" not in kinds
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments)["city"]


def test_stateful_requests_are_refused(client):
    with pytest.raises(openai.BadRequestError, match="store"):
        client.responses.create(model="gpt-4o", input="hi")  # store defaults to true
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o", input="hi", store=False, previous_response_id="resp_x")
    assert err.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", input=[{"type": "item_reference", "id": "msg_1"}], store=False)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "gpt-4o", "store": False}, "input"),
        ({"model": "gpt-4o", "input": 3, "store": False}, "input"),
        ({"model": "gpt-4o", "input": [{"role": "robot", "content": "x"}], "store": False}, "input[0].role"),
        ({"model": "gpt-4o", "input": "x", "store": False, "max_output_tokens": 4}, "max_output_tokens"),
        ({"model": "gpt-4o", "input": "x", "store": False, "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"model": "gpt-4o", "input": [{"type": "function_call_output", "output": "x"}], "store": False},
            "input[0].call_id",
        ),
    ],
)
def test_bad_requests_are_400s_naming_the_param(osim, body, param):
    r = httpx.post(osim.url + "/v1/responses", json=body, headers={"authorization": f"Bearer {OPENAI_KEY}"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_faults_apply_to_responses(osim):
    client = openai.OpenAI(base_url=osim.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=10)
    osim.state.set_fault({"status": 503, "times": 1})
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4o", input="hi", store=False)
    osim.state.set_fault({"cut_after": 2, "times": 1})
    with pytest.raises(openai.APIError):
        list(client.responses.create(model="gpt-4o", input="one two three four five", store=False, stream=True))
    assert client.responses.create(model="gpt-4o", input="hi", store=False).status == "completed"


def test_requests_are_logged_as_responses(osim):
    client = openai.OpenAI(base_url=osim.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=10)
    list(client.responses.create(model="gpt-4o", input="hi", store=False, stream=True))
    entry = osim.state.requests()[-1]
    assert entry["path"] == "/v1/responses" and entry["model"] == "gpt-4o" and entry["stream"] is True
