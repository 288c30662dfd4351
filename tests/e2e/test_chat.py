"""The official openai SDK, unchanged, against the running gateway: the happy paths."""

from __future__ import annotations

import base64
import json
import struct

import jsonschema
import openai
import pytest

USER = [{"role": "user", "content": "Hello there"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


def test_chat_is_served_by_the_primary(client, sims):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    completion = raw.parse()
    assert raw.headers["x-multihome-deployment"] == "az-main"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-multihome-attempts"].startswith("az-main;outcome=ok;ms=")
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0
    (logged,) = [r for r in sims["azure"].requests() if r["model"] == "gpt-4o-main"]
    assert logged["request_id"] == raw.headers["x-request-id"]
    assert logged["api_version"] == "2024-10-21"
    assert sims["openai"].stats()["requests"] == 0


def test_streaming_with_usage(client, sims):
    stream = client.chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    # Azure's prompt-filter-only first chunk (choices: []) must not reach the client.
    assert all(c.choices for c in chunks[:-1])


def test_streaming_without_usage_hides_the_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_tool_call_round_trip(client):
    first = client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="required")
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit"}
    second = client.chat.completions.create(
        model="gpt-4o",
        tools=[WEATHER_TOOL],
        messages=[
            *USER,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "21 degrees and sunny"},
        ],
    )
    assert "21 degrees and sunny" in second.choices[0].message.content


def test_streaming_tool_call_arguments_reassemble(client):
    stream = client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="required", stream=True
    )
    args, names = {}, {}
    for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args[delta.index] = args.get(delta.index, "") + (delta.function.arguments or "")
            if delta.function.name:
                names[delta.index] = delta.function.name
    assert names == {0: "get_weather"}
    assert set(json.loads(args[0])) == {"city", "unit"}


def test_image_input_skips_a_deployment_without_vision(client, sims):
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}],
        }
    ]
    raw = client.chat.completions.with_raw_response.create(model="mixed", messages=messages)
    assert raw.headers["x-multihome-deployment"] == "oa-vision"
    assert "1 image" in raw.parse().choices[0].message.content
    assert sims["selfhosted"].stats()["requests"] == 0
    # Text-only requests still go to the primary.
    raw = client.chat.completions.with_raw_response.create(model="mixed", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "sh-text"


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


def test_embeddings_float_and_base64(client):
    floats = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) > 0 and floats.data[0].embedding != floats.data[1].embedding
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="alpha", encoding_format="base64"
    )
    assert raw.headers["x-multihome-deployment"] == "az-embed"
    packed = base64.b64decode(raw.parse().data[0].embedding)
    decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert decoded == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_models_list_and_retrieve(client):
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o", "gpt-4o-strict", "solo", "mixed", "text-embedding-3-small"} <= ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_azure_v1_form(client, sims):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-v1", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "az-v1"
    (logged,) = [r for r in sims["azure"].requests() if r["model"] == "gpt-4o-v1dep"]
    assert logged["path"].startswith("/openai/v1/chat/completions")
