"""The anthropic simulator kind, checked with the official anthropic SDK and raw HTTP."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

KEY = "sk-ant-sim-test"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
HI = [{"role": "user", "content": "Hello there"}]
TOOLS = [
    {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}},
]


@pytest.fixture(scope="module")
def anthropic_sim():
    sim = start_simulator_in_thread(SimulatorConfig(kind="anthropic", name="claude-sim", api_key=KEY))
    yield sim
    sim.close()


@pytest.fixture
def sim(anthropic_sim):
    anthropic_sim.reset()
    return anthropic_sim


@pytest.fixture
def sdk(sim):
    return anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0, timeout=10)


def post(sim, body: dict, **headers) -> httpx.Response:
    return httpx.post(sim.url + "/v1/messages", json=body, headers={**HEADERS, **headers}, timeout=10)


def test_message_shape_and_headers(sim):
    r = post(sim, {"model": "claude-x", "max_tokens": 50, "messages": HI})
    assert r.status_code == 200 and r.headers["request-id"].startswith("req_")
    assert "anthropic-ratelimit-requests-remaining" in r.headers
    body = r.json()
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["content"] == [{"type": "text", "text": "Hello from claude-sim. You said: Hello there"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    assert set(body["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }


def test_sdk_stream_accumulates_parallel_tool_calls(sdk):
    with sdk.messages.stream(
        model="claude-x", max_tokens=100, tools=TOOLS, messages=[{"role": "user", "content": "both in parallel"}]
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and "message_stop" in events
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [b.input for b in final.content[1:]] == [{"city": "example"}, {"tz": "example"}]
    assert final.stop_reason == "tool_use"


def test_raw_stream_uses_named_events(sim):
    r = post(sim, {"model": "claude-x", "max_tokens": 50, "messages": HI, "stream": True})
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "[DONE]" not in r.text


def test_stop_sequences_and_max_tokens(sdk):
    stopped = sdk.messages.create(model="c", max_tokens=50, messages=HI, stop_sequences=["You said", "zzz"])
    assert (stopped.content[0].text, stopped.stop_reason, stopped.stop_sequence) == (
        "Hello from claude-sim. ",
        "stop_sequence",
        "You said",
    )
    short = sdk.messages.create(model="c", max_tokens=2, messages=HI)
    assert (short.content[0].text, short.stop_reason, short.usage.output_tokens) == ("Hello fr", "max_tokens", 2)


def test_structured_output_follows_the_schema(sdk):
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 5}},
        "required": ["n"],
        "additionalProperties": False,
    }
    reply = sdk.messages.create(
        model="c", max_tokens=50, messages=HI, output_config={"format": {"type": "json_schema", "schema": schema}}
    )
    assert reply.content[0].text == '{"n":5}'


def test_images_are_counted(sdk):
    reply = sdk.messages.create(
        model="c",
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {"type": "text", "text": "what?"},
                ],
            }
        ],
    )
    assert reply.content[0].text.endswith("I see 2 image(s).")


VALIDATION = [
    ("max_tokens required", {"model": "c", "messages": HI}, "max_tokens: Field required"),
    ("system role", {"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "system"),
    ("empty messages", {"model": "c", "max_tokens": 5, "messages": []}, "at least one message"),
    ("extra field", {"model": "c", "max_tokens": 5, "messages": HI, "n": 2}, "n: Extra inputs are not permitted"),
    ("temperature range", {"model": "c", "max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature"),
    (
        "empty text",
        {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
        "non-empty",
    ),
    (
        "tool_use unanswered",
        {
            "model": "c",
            "max_tokens": 5,
            "tools": TOOLS,
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}],
                },
                {"role": "user", "content": "hm"},
            ],
        },
        "without `tool_result`",
    ),
    (
        "tool_result orphan",
        {
            "model": "c",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]}
            ],
        },
        "unexpected `tool_use_id`",
    ),
    (
        "named tool missing",
        {
            "model": "c",
            "max_tokens": 5,
            "messages": HI,
            "tools": TOOLS,
            "tool_choice": {"type": "tool", "name": "nope"},
        },
        "nope",
    ),
]


@pytest.mark.parametrize("body, fragment", [v[1:] for v in VALIDATION], ids=[v[0] for v in VALIDATION])
def test_request_validation(sim, body, fragment):
    r = post(sim, body)
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert fragment in r.json()["error"]["message"]


def test_consecutive_turns_are_combined_as_documented(sdk):
    reply = sdk.messages.create(model="c", max_tokens=50, messages=[*HI, {"role": "user", "content": "again"}])
    assert reply.stop_reason == "end_turn"


def test_auth_and_version(sim):
    assert post(sim, {}, **{"x-api-key": "wrong"}).json()["error"]["type"] == "authentication_error"
    no_key = httpx.post(sim.url + "/v1/messages", json={}, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401
    no_version = httpx.post(sim.url + "/v1/messages", json={}, headers={"x-api-key": KEY})
    assert no_version.status_code == 400 and "anthropic-version" in no_version.json()["error"]["message"]


@pytest.mark.parametrize(
    "fault, status, kind",
    [
        ("throttle=3", 429, "rate_limit_error"),
        ("status=529", 529, "overloaded_error"),
        ("status=500", 500, "api_error"),
        ("status=403", 403, "permission_error"),
    ],
)
def test_error_faults(sim, fault, status, kind):
    r = post(sim, {"model": "c", "max_tokens": 5, "messages": HI}, **{"x-sim-fault": fault})
    assert r.status_code == status and r.json()["error"]["type"] == kind
    if status == 429:
        assert r.headers["retry-after"] == "3"


def test_sdk_raises_its_own_exceptions(sdk):
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(model="c", max_tokens=5, messages=HI, extra_headers={"x-sim-fault": "throttle=1"})
    with pytest.raises(anthropic.InternalServerError) as info:
        sdk.messages.create(model="c", max_tokens=5, messages=HI, extra_headers={"x-sim-fault": "status=529"})
    assert info.value.status_code == 529


@pytest.mark.parametrize("knob", ["prompt", "output"])
def test_content_filter_is_a_refusal(sdk, knob):
    reply = sdk.messages.create(
        model="c",
        max_tokens=50,
        messages=[{"role": "user", "content": "one two three four"}],
        extra_headers={"x-sim-fault": f"content_filter={knob}"},
    )
    assert reply.stop_reason == "refusal"
    assert (reply.content == []) == (knob == "prompt")


def test_malformed_and_cut_streams(sim):
    bad = post(
        sim, {"model": "c", "max_tokens": 50, "messages": HI, "stream": True}, **{"x-sim-fault": "malformed_at=2"}
    )
    assert "data: {not json" in bad.text and bad.text.rstrip().endswith('{"type":"message_stop"}')
    with pytest.raises(httpx.HTTPError):
        post(sim, {"model": "c", "max_tokens": 50, "messages": HI, "stream": True}, **{"x-sim-fault": "cut_after=1"})
    assert sim.stats()["cut"] == 1


def test_prompt_cache_reads_on_the_second_identical_prefix(sdk, sim):
    system = [{"type": "text", "text": "A long shared instruction. " * 30, "cache_control": {"type": "ephemeral"}}]
    first = sdk.messages.create(model="c", max_tokens=20, system=system, messages=HI).usage
    second = sdk.messages.create(
        model="c", max_tokens=20, system=system, messages=[{"role": "user", "content": "Different question"}]
    ).usage
    assert first.cache_creation_input_tokens > 100 and first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    sim.reset()
    again = sdk.messages.create(model="c", max_tokens=20, system=system, messages=HI).usage
    assert again.cache_read_input_tokens == 0  # /_sim/reset forgets the cache
