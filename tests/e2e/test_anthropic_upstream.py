"""Anthropic Messages API as an upstream: the real gateway process in front of the anthropic
simulator, driven with the official openai SDK."""

from __future__ import annotations

import base64
import json
import time

import jsonschema
import openai
import pytest

from builders import api_keys, config, deployment, group, simulated

from .processes import Gateway, Simulators

CLIENT_KEY = "mh-anthropic-e2e-client"
SECRETS = {
    "MH_AE_CLIENT_KEY": CLIENT_KEY,
    "MH_AE_ANTHROPIC_KEY": "sk-ant-e2e-secret-789",
    "MH_AE_WRONG_KEY": "sk-ant-not-the-right-one",
    "MH_AE_OPENAI_KEY": "openai-e2e-secret-012",
}


def _config(anthropic_url: str, openai_url: str) -> dict:
    """The Anthropic simulator reached with the right key and with a wrong one; an OpenAI one to fail over to."""
    return config(
        server=api_keys("MH_AE_CLIENT_KEY"),
        providers={
            "anthropic": simulated("anthropic", anthropic_url, key_env="MH_AE_ANTHROPIC_KEY"),
            "anthropic-wrong-key": simulated("anthropic", anthropic_url, key_env="MH_AE_WRONG_KEY"),
            "openai": simulated("openai", openai_url, key_env="MH_AE_OPENAI_KEY"),
        },
        deployments={
            "claude": deployment("anthropic", "claude-sonnet-4-5"),
            "claude-fo": deployment("anthropic", "claude-fo"),
            "claude-rf": deployment("anthropic", "claude-rf"),
            "claude-bad": deployment("anthropic-wrong-key", "claude-bad"),
            "oa-fo": deployment("openai", "gpt-fo"),
        },
        model_groups={
            "claude": group("claude", retries=0),
            "claude-failover": group("claude-fo", "oa-fo", retries=1, backoff_ms=10, max_retry_after_s=2),
            "claude-refusal-failover": group(
                "claude-rf", "oa-fo", retries=0, fail_over_on=["capacity", "unavailable", "refusal"]
            ),
            "claude-bad": group("claude-bad", retries=0),
        },
    )


HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}, "utc": {"type": "boolean"}},
            "required": ["tz"],
        },
    },
}


@pytest.fixture(scope="module")
def upstreams():
    with Simulators() as started:
        yield {
            "anthropic": started.start("anthropic", "anth-sim", key_env="MH_AE_ANTHROPIC_KEY", env=SECRETS),
            "openai": started.start("openai", "oa-sim", key_env="MH_AE_OPENAI_KEY", env=SECRETS),
        }


@pytest.fixture(scope="module")
def anthropic_gateway(upstreams, tmp_path_factory):
    gw = Gateway(
        _config(upstreams["anthropic"].url, upstreams["openai"].url), tmp_path_factory.mktemp("gw-anthropic"), SECRETS
    )
    yield gw
    log = gw.stop()
    for secret in SECRETS.values():
        assert secret not in log, "a secret reached the gateway's log"


@pytest.fixture
def sims(upstreams):
    for sim in upstreams.values():
        sim.reset()
    return upstreams


@pytest.fixture
def client(anthropic_gateway, sims) -> openai.OpenAI:
    return openai.OpenAI(base_url=anthropic_gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15)


def _outcomes(raw) -> list[tuple[str, str]]:
    items = [part.split(";") for part in raw.headers["x-multihome-attempts"].split(", ")]
    return [(item[0], item[1].removeprefix("outcome=")) for item in items]


def _collect(stream):
    """Text, tool calls by OpenAI index, finish reasons and usage from a chunk stream."""
    text, calls, finishes, usage = [], {}, [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            text.append(delta.content or "")
            for tc in delta.tool_calls or ():
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return "".join(text), calls, finishes, usage


# -- plain chat ------------------------------------------------------------------------------


def test_chat_is_translated_both_ways(client, sims):
    raw = client.chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "system", "content": "Be brief."}, *HELLO]
    )
    reply = raw.parse()
    assert raw.headers["x-multihome-deployment"] == "claude"
    assert reply.choices[0].message.content == "Hello from anth-sim. You said: Hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "claude-sonnet-4-5"
    assert reply.usage.completion_tokens == 11  # ceil(42 chars / 4)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 11
    log = sims["anthropic"].requests()
    assert [(e["path"], e["model"], e["auth"], e["outcome"]) for e in log] == [
        ("/v1/messages", "claude-sonnet-4-5", True, "ok")
    ]


def test_stream_with_usage_matches_the_unary_answer(client):
    unary = client.chat.completions.create(model="claude", messages=HELLO)
    stream = client.chat.completions.create(
        model="claude", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    text, calls, finishes, usage = _collect(stream)
    assert text == unary.choices[0].message.content
    assert not calls and finishes == ["stop"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (unary.usage.prompt_tokens, unary.usage.completion_tokens)


def test_stream_without_include_usage_sends_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="claude", messages=HELLO, stream=True))
    assert all(c.usage is None and c.choices for c in chunks)


# -- tools -----------------------------------------------------------------------------------


def test_tool_call_unary(client):
    reply = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll use get_weather."
    [call] = choice.message.tool_calls
    assert call.id.startswith("toolu_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example"}


def test_parallel_tools_stream_with_indices_from_zero(client):
    stream = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Do both in parallel"}],
        tools=[WEATHER, TIME],
        stream=True,
    )
    text, calls, finishes, _ = _collect(stream)
    assert text == "I'll use get_weather, get_time."
    assert sorted(calls) == [0, 1]  # Anthropic blocks 1 and 2 become OpenAI tool indices 0 and 1
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "example"}
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"tz": "example", "utc": True}
    assert finishes == ["tool_calls"]


def test_parallel_tool_calls_false_gives_one_call(client):
    reply = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Do both in parallel"}],
        tools=[WEATHER, TIME],
        parallel_tool_calls=False,
    )
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["get_weather"]


def test_required_and_named_tool_choice(client):
    required = client.chat.completions.create(
        model="claude", messages=HELLO, tools=[WEATHER, TIME], tool_choice="required"
    )
    named = client.chat.completions.create(
        model="claude",
        messages=HELLO,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    none = client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER], tool_choice="none")
    # Forced choices: Claude goes straight to the tool, without a preamble text.
    assert required.choices[0].message.content is None
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


def _agent_step(client, messages, stream: bool):
    if not stream:
        msg = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER, TIME]).choices[0]
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in msg.message.tool_calls or ()
        ]
        return msg.message.content, calls, msg.finish_reason
    text, calls, finishes, _ = _collect(
        client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER, TIME], stream=True)
    )
    return text or None, [calls[i] for i in sorted(calls)], finishes[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_three_step_agent_loop(client, stream):
    """Tool call -> result + follow-up question -> tool call -> result -> final answer."""
    messages = [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    answers = []
    follow_ups = ["And the time there?"]
    for step in range(3):  # bounded: an agent that never finishes fails the test
        text, calls, finish = _agent_step(client, messages, stream)
        answers.append((finish, [c["name"] for c in calls]))
        if finish != "tool_calls":
            break
        messages.append(
            {
                "role": "assistant",
                "content": text,
                "tool_calls": [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls
                ],
            }
        )
        for c in calls:
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": f"result of {c['name']}"})
        if follow_ups:
            messages.append({"role": "user", "content": follow_ups.pop()})
    assert answers == [("tool_calls", ["get_weather"]), ("tool_calls", ["get_weather"]), ("stop", [])]
    last_call_id = messages[-1]["tool_call_id"]
    assert text == f"Tool {last_call_id} returned: result of get_weather"


def test_parallel_results_go_back_as_one_user_turn(client):
    first = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "in parallel please"}], tools=[WEATHER, TIME]
    )
    calls = first.choices[0].message.tool_calls
    assert len(calls) == 2
    messages = [
        {"role": "user", "content": "in parallel please"},
        first.choices[0].message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": f"{c.function.name} done"} for c in calls),
    ]
    # The simulator rejects tool results that do not answer the previous turn's tool_use ids.
    final = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER, TIME])
    assert final.choices[0].message.content == f"Tool {calls[1].id} returned: get_time done"


# -- content and output controls -------------------------------------------------------------

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def test_images_data_url_and_https(client):
    reply = client.chat.completions.create(
        model="claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content.endswith("I see 2 image(s).")


def test_unsupported_image_type_is_a_400(client, sims):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="claude",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": f"data:image/bmp;base64,{PNG}"}}],
                }
            ],
        )
    assert "image/bmp" in info.value.message
    assert sims["anthropic"].stats()["requests"] == 0


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 3}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="claude",
        messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    value = json.loads(reply.choices[0].message.content)
    jsonschema.validate(value, schema)
    assert value == {"name": "example", "age": 3}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_json_object_mode_returns_a_json_object(client, stream):
    if stream:
        text, calls, finishes, _ = _collect(
            client.chat.completions.create(
                model="claude", messages=HELLO, response_format={"type": "json_object"}, stream=True
            )
        )
    else:
        reply = client.chat.completions.create(model="claude", messages=HELLO, response_format={"type": "json_object"})
        text, calls, finishes = reply.choices[0].message.content, {}, [reply.choices[0].finish_reason]
    assert isinstance(json.loads(text), dict)
    assert not calls and finishes == ["stop"]


def test_stop_sequence(client):
    reply = client.chat.completions.create(model="claude", messages=HELLO, stop=["You said"])
    assert reply.choices[0].message.content == "Hello from anth-sim. "
    assert reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_max_tokens_gives_length(client, stream):
    if stream:
        text, _, finishes, _ = _collect(
            client.chat.completions.create(model="claude", messages=HELLO, max_completion_tokens=3, stream=True)
        )
    else:
        reply = client.chat.completions.create(model="claude", messages=HELLO, max_tokens=3)
        text, finishes = reply.choices[0].message.content, [reply.choices[0].finish_reason]
    assert text == "Hello from a"
    assert finishes == ["length"]


def test_dropped_and_refused_parameters(client, sims):
    raw = client.chat.completions.with_raw_response.create(
        model="claude", messages=HELLO, seed=7, frequency_penalty=0.5, temperature=0.3
    )
    assert set(raw.headers["x-multihome-dropped-params"].split(",")) == {"seed", "frequency_penalty"}
    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(model="claude", messages=HELLO, temperature=1.5)
    assert hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model="claude", messages=HELLO, n=2)
    assert many.value.code == "unsupported_parameter"
    assert sims["anthropic"].stats()["requests"] == 1  # refusals never reach the provider


# -- prompt caching --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_cache_control_markers_report_cached_tokens(client, stream):
    system = {
        "role": "system",
        "content": [{"type": "text", "text": f"Policy manual {stream} " * 40, "cache_control": {"type": "ephemeral"}}],
    }
    messages = [system, {"role": "user", "content": "Question one"}]

    def usage():
        if not stream:
            return client.chat.completions.create(model="claude", messages=messages).usage
        return _collect(
            client.chat.completions.create(
                model="claude", messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )[3]

    first, second = usage(), usage()
    assert first.prompt_tokens_details.cached_tokens == 0
    assert second.prompt_tokens_details.cached_tokens > 100
    # prompt_tokens counts cached input too, so both calls report the same prompt size.
    assert second.prompt_tokens == first.prompt_tokens


# -- failover and errors ---------------------------------------------------------------------


def test_throttled_anthropic_fails_over_with_long_retry_after(client, sims):
    sims["anthropic"].fault(throttle=30, match="claude-fo")
    raw = client.chat.completions.with_raw_response.create(model="claude-failover", messages=HELLO)
    assert _outcomes(raw) == [("claude-fo", "http_429"), ("oa-fo", "ok")]
    assert raw.parse().choices[0].message.content.startswith("Hello from oa-sim")


def test_short_retry_after_is_honoured_on_the_same_deployment(client, sims):
    sims["anthropic"].fault(throttle=1, match="claude-fo", times=1)
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="claude-failover", messages=HELLO)
    assert _outcomes(raw) == [("claude-fo", "http_429"), ("claude-fo", "ok")]
    assert time.perf_counter() - started >= 1.0


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_overloaded_529_fails_over(client, sims, stream):
    sims["anthropic"].fault(status=529, match="claude-fo")
    raw = client.chat.completions.with_raw_response.create(model="claude-failover", messages=HELLO, stream=stream)
    assert _outcomes(raw) == [("claude-fo", "http_529"), ("claude-fo", "http_529"), ("oa-fo", "ok")]


def test_refusal_is_content_filter(client, sims):
    sims["anthropic"].fault(content_filter="output", match="claude-sonnet-4-5")
    reply = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "one two three four"}])
    assert reply.choices[0].finish_reason == "content_filter"


def test_refusal_fails_over_where_configured(client, sims):
    sims["anthropic"].fault(content_filter="prompt", match="claude-rf")
    raw = client.chat.completions.with_raw_response.create(model="claude-refusal-failover", messages=HELLO)
    assert _outcomes(raw) == [("claude-rf", "content_filter"), ("oa-fo", "ok")]


def test_malformed_stream_before_first_byte_fails_over(client, sims):
    sims["anthropic"].fault(malformed_at=1, match="claude-fo")
    raw = client.chat.completions.with_raw_response.create(model="claude-failover", messages=HELLO, stream=True)
    assert raw.headers["x-multihome-deployment"] == "oa-fo"
    assert _collect(raw.parse())[0].startswith("Hello from oa-sim")


def test_malformed_stream_after_first_byte_raises_in_the_sdk(client, sims):
    sims["anthropic"].fault(malformed_at=6, match="claude-sonnet-4-5")
    stream = client.chat.completions.create(model="claude", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).startswith("Hello")
    assert "broke" in info.value.message


def test_cut_stream_after_first_byte_raises_in_the_sdk(client, sims):
    sims["anthropic"].fault(cut_after=2, match="claude-sonnet-4-5")
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="claude", messages=HELLO, stream=True):
            pass


def test_wrong_provider_key_is_a_502_about_credentials(client, sims):
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="claude-bad", messages=HELLO)
    assert info.value.status_code == 502
    assert "credentials" in info.value.message
    assert sims["anthropic"].requests()[-1]["outcome"] == "error:401"


def test_upstream_validation_error_reaches_the_client(client, sims):
    # Assistant tool calls whose results never come back: Anthropic rejects the conversation.
    messages = [
        *HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "toolu_x1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "user", "content": "never mind"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER])
    assert "tool_result" in info.value.message and "claude" in info.value.message
