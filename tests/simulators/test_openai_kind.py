"""The openai kind through the official SDK: replies, streams, tools, embeddings, models, errors."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import openai
import pytest

from .sim_helpers import OPENAI_KEY

USER = [{"role": "user", "content": "What is the capital of France, please tell me now?"}]
REPLY = "Hello from openai-sim. You said: What is the capital of France, please te"  # first 40 chars
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "detailed": {"type": "boolean"},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"],
                },
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}


def test_plain_chat(oclient):
    r = oclient.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o-mini"
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content == REPLY
    assert c.message.refusal is None
    assert c.finish_reason == "stop"
    assert r.usage.completion_tokens == (len(c.message.content) + 3) // 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.system_fingerprint.startswith("fp_")


def test_same_request_same_reply_and_headers(oclient):
    a = oclient.chat.completions.with_raw_response.create(model="m", messages=USER)
    b = oclient.chat.completions.with_raw_response.create(model="m", messages=USER)
    assert a.http_response.content == b.http_response.content
    assert a.headers["x-request-id"].startswith("req_")
    assert a.headers["openai-version"] == "2020-10-01"
    c = oclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "other"}])
    assert c.id != a.parse().id


def test_system_and_part_list_user_text(oclient):
    r = oclient.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        ],
    )
    assert r.choices[0].message.content.endswith("You said: part one part two")


def test_images_are_counted(oclient):
    r = oclient.chat.completions.create(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            }
        ],
    )
    assert "I see 2 image(s)." in r.choices[0].message.content
    text_only = oclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "describe"}])
    assert r.usage.prompt_tokens > text_only.usage.prompt_tokens


def test_stream_with_include_usage(oclient):
    stream = oclient.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # split per word
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == (len(text) + 3) // 4
    assert len({c.id for c in chunks}) == 1


def test_stream_raw_framing(osim):
    body = {"model": "m", "messages": USER, "stream": True}
    with httpx.stream(
        "POST", osim.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {OPENAI_KEY}"}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-2] == "data: [DONE]" and events[-1] == ""
    payloads = [json.loads(e[len("data: ") :]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[-1]["choices"][0]["delta"] == {}
    assert "usage" not in payloads[0]  # only with include_usage


def test_tool_call_and_round_trip(oclient):
    tools = [WEATHER, TIME]
    r = oclient.chat.completions.create(model="m", messages=USER, tools=tools)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content is None
    assert len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert args == {
        "city": "example",
        "unit": "celsius",
        "days": 1,
        "detailed": True,
        "where": {"lat": 1, "lon": 1},
        "tags": ["example"],
    }
    follow = oclient.chat.completions.create(
        model="m",
        tools=tools,
        messages=USER
        + [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content == f'Tool {call.id} returned: {{"temp": 21}}'


def test_named_tool_choice_and_none(oclient):
    r = oclient.chat.completions.create(
        model="m",
        messages=USER,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [t.function.name for t in r.choices[0].message.tool_calls] == ["get_time"]
    r = oclient.chat.completions.create(model="m", messages=USER, tools=[WEATHER], tool_choice="none")
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError):
        oclient.chat.completions.create(
            model="m", messages=USER, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}
        )


def test_parallel_tool_calls(oclient):
    msgs = [{"role": "user", "content": "Do these in parallel please"}]
    r = oclient.chat.completions.create(model="m", messages=msgs, tools=[WEATHER, TIME])
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    single = oclient.chat.completions.create(model="m", messages=msgs, tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert len(single.choices[0].message.tool_calls) == 1


def test_streamed_tool_calls_reassemble(oclient):
    msgs = [{"role": "user", "content": "parallel"}]
    chunks = list(oclient.chat.completions.create(model="m", messages=msgs, tools=[WEATHER, TIME], stream=True))
    calls: dict[int, dict] = {}
    for ch in chunks:
        for tc in ch.choices[0].delta.tool_calls or []:
            if tc.index not in calls:
                assert tc.id and tc.type == "function" and tc.function.name and tc.function.arguments == ""
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and tc.function.name is None
                calls[tc.index]["arguments"] += tc.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert json.loads(calls[0]["arguments"])["unit"] == "celsius"
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"tz": "example"}


def _valid(instance, schema) -> bool:
    """A small JSON-Schema check (type/properties/required/enum/items/additionalProperties)."""
    t = schema.get("type")
    if "enum" in schema and instance not in schema["enum"]:
        return False
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}
    if t and not isinstance(instance, types[t]):
        return False
    if t in ("integer", "number") and isinstance(instance, bool):
        return False
    if t == "object":
        props = schema.get("properties", {})
        if any(k not in instance for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and set(instance) - set(props):
            return False
        return all(_valid(instance[k], props[k]) for k in instance if k in props)
    if t == "array":
        return all(_valid(i, schema.get("items", {})) for i in instance) and len(instance) >= schema.get("minItems", 0)
    return True


def test_json_schema_output_validates(oclient):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "kind": {"type": "string", "enum": ["cat", "dog"]},
            "friends": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"n": {"type": "string"}},
                    "required": ["n"],
                    "additionalProperties": False,
                },
                "minItems": 2,
            },
        },
        "required": ["name", "age", "kind", "friends"],
        "additionalProperties": False,
    }
    r = oclient.chat.completions.create(
        model="m",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    data = json.loads(r.choices[0].message.content)
    assert _valid(data, schema)
    try:
        import jsonschema
    except ImportError:  # the small checker above still runs
        pass
    else:
        jsonschema.validate(data, schema)
    assert data["age"] == 18 and data["kind"] == "cat" and len(data["friends"]) == 2
    assert not _valid({"name": "x"}, schema)  # the checker itself can fail


def test_json_object_output(oclient):
    r = oclient.chat.completions.create(model="m", messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_max_tokens_truncates_with_length(oclient):
    r = oclient.chat.completions.create(model="m", messages=USER, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "Hello from o"
    assert r.usage.completion_tokens == 3
    r = oclient.chat.completions.create(model="m", messages=USER, max_completion_tokens=2)
    assert r.choices[0].message.content == "Hello fr" and r.choices[0].finish_reason == "length"


def test_stop_sequences(oclient):
    r = oclient.chat.completions.create(model="m", messages=USER, stop="You said")
    assert r.choices[0].message.content == "Hello from openai-sim. "
    assert r.choices[0].finish_reason == "stop"
    r = oclient.chat.completions.create(model="m", messages=USER, stop=["zzz", "sim"])
    assert r.choices[0].message.content == "Hello from openai-"


def test_n_choices(oclient):
    r = oclient.chat.completions.create(model="m", messages=USER, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 3 * ((len(r.choices[0].message.content) + 3) // 4)


def test_embeddings_float_and_base64(oclient):
    r = oclient.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
    assert [d.index for d in r.data] == [0, 1]
    v0, v1 = r.data[0].embedding, r.data[1].embedding
    assert len(v0) == 8 and v0 != v1
    assert abs(sum(x * x for x in v0) - 1.0) < 1e-5
    assert r.usage.prompt_tokens == 3 and r.usage.total_tokens == 3  # ceil(5/4) + ceil(4/4)
    raw = oclient.embeddings.with_raw_response.create(
        model="e", input="alpha", encoding_format="base64", dimensions=16
    ).http_response.json()
    b = base64.b64decode(raw["data"][0]["embedding"])
    assert len(b) == 64
    again = oclient.embeddings.create(model="e", input="alpha", dimensions=16, encoding_format="float")
    assert list(struct.unpack("<16f", b)) == again.data[0].embedding
    # The SDK's default (base64 on the wire, decoded client-side) gives the same numbers.
    sdk_default = oclient.embeddings.create(model="e", input="alpha", dimensions=16)
    assert sdk_default.data[0].embedding == again.data[0].embedding
    tokens = oclient.embeddings.create(model="e", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert tokens.usage.prompt_tokens == 5


def test_embeddings_bad_input(oclient):
    with pytest.raises(openai.BadRequestError):
        oclient.embeddings.create(model="e", input="")
    with pytest.raises(openai.BadRequestError):
        oclient.embeddings.create(model="e", input="x", encoding_format="int8")  # type: ignore[arg-type]


def test_models(oclient):
    ids = [m.id for m in oclient.models.list()]
    assert "gpt-4o-mini" in ids
    m = oclient.models.retrieve("meta-llama/Llama-3.1-8B")
    assert m.id == "meta-llama/Llama-3.1-8B" and m.object == "model"


def test_auth_failures(osim):
    bad = openai.OpenAI(base_url=osim.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="m", messages=USER)
    assert e.value.body["code"] == "invalid_api_key"
    assert e.value.body["type"] == "invalid_request_error"
    assert "sk-wrong" not in json.dumps(e.value.body)
    r = httpx.post(osim.url + "/v1/chat/completions", json={"model": "m", "messages": USER})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    log = osim.requests()
    assert [x["auth"] for x in log] == [True, False]
    assert "sk-wrong" not in json.dumps(log)


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{not json", None),
        (b'{"model":"m"}', "messages"),
        (b'{"model":"m","messages":[]}', "messages"),
        (b'{"messages":[{"role":"user","content":"x"}]}', "model"),
        (b'{"model":"m","messages":[{"role":"wizard","content":"x"}]}', "messages[0].role"),
        (b"[1,2]", None),
        (b'{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}', "n"),
    ],
)
def test_bad_input_is_400(osim, body, param):
    r = httpx.post(
        osim.url + "/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"},
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert osim.stats()["errors"] == 1


def test_unknown_route_404(osim):
    r = httpx.post(osim.url + "/v1/nope", json={}, headers={"Authorization": f"Bearer {OPENAI_KEY}"})
    assert r.status_code == 404 and "Invalid URL" in r.json()["error"]["message"]


def test_configured_models_reject_unknown():
    from multihome.simulators import SimulatorConfig, start_simulator_in_thread

    with start_simulator_in_thread(SimulatorConfig(name="vllm", deployments=["llama"])) as sim:
        c = openai.OpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
        assert [m.id for m in c.models.list()] == ["llama"]
        assert c.chat.completions.create(model="llama", messages=USER).model == "llama"
        with pytest.raises(openai.NotFoundError) as e:
            c.chat.completions.create(model="gpt-5", messages=USER)
        assert e.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("gpt-5")
