"""The official anthropic SDK, unchanged, against the gateway's `POST /v1/messages` door.

The gateway serves the Anthropic wire format from OpenAI and Azure deployments: the same
routing, failover and `x-multihome-*` headers as the OpenAI door, Anthropic's shapes and errors.
"""

from __future__ import annotations

import base64
import json
import math
import time

import anthropic
import httpx
import pydantic
import pytest

from builders import api_keys, breakers, config, deployment, group, simulated, single

from .conftest import CLIENT_KEY, QUICK, SECRETS
from .processes import Gateway


def _config(sims) -> dict:
    """The shared `sims` behind Claude-named groups on OpenAI and Azure deployments."""
    return config(
        server=api_keys("MH_TEST_CLIENT_KEY", max_body_bytes=262144),
        routing=breakers(1000),  # these tests take deployments down on purpose
        providers={
            "azure": simulated("azure", sims["azure"].url, key_env="MH_TEST_AZURE_KEY"),
            "openai": simulated("openai", sims["openai"].url, key_env="MH_TEST_OPENAI_KEY"),
            "selfhosted": simulated("openai", sims["selfhosted"].url),
        },
        deployments={
            "az-claude": deployment("azure", "claude-az"),
            "oa-claude": deployment("openai", "claude-oa"),
            "oa-solo": deployment("openai", "claude-solo"),
            "sh-text": deployment("selfhosted", "llama-text", capabilities=["chat", "streaming", "tools"]),
            "oa-vision": deployment("openai", "claude-vision"),
        },
        model_groups={
            "claude-sonnet": group(
                "az-claude", "oa-claude", retries=1, backoff_ms=10, max_retry_after_s=1.5, timeouts=QUICK
            ),
            "claude-solo": group("oa-solo", retries=0, timeouts=QUICK),
            "claude-mixed": group("sh-text", "oa-vision"),
        },
    )


MODEL = "claude-sonnet"
HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {
    "name": "get_time",
    "description": "Local time in a timezone",
    "input_schema": {
        "type": "object",
        "properties": {"tz": {"type": "string", "enum": ["CET", "UTC"]}},
        "required": ["tz"],
    },
}
TOOL_RESULTS = {"get_weather": "18C and sunny", "get_time": "14:05 CET"}


@pytest.fixture(scope="module")
def door(sims, tmp_path_factory):
    gw = Gateway(_config(sims), tmp_path_factory.mktemp("anthropic-door"), SECRETS)
    yield gw
    log = gw.stop()
    for secret in SECRETS.values():
        assert secret not in log, "a secret reached the gateway's log"


@pytest.fixture
def claude(door) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=door.url, api_key=CLIENT_KEY, max_retries=0, timeout=10)


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


# --- happy paths ---------------------------------------------------------------------------------


def test_plain_message_is_served_by_the_primary_with_gateway_headers(claude, sims):
    raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=HELLO)
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello from azure-eastus. You said: Hello there"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-multihome-deployment"] == "az-claude"
    assert raw.headers["x-multihome-attempts"].startswith("az-claude;outcome=ok;ms=")
    (logged,) = [r for r in sims["azure"].requests() if r["model"] == "claude-az"]
    assert logged["request_id"] == raw.headers["x-request-id"]


def test_the_sdk_reads_the_request_id_of_every_answer(claude, sims):
    """The anthropic SDK reads Anthropic's `request-id` header (not `x-request-id`) into `message._request_id`,
    a stream's `request_id` and an error's `request_id`: what a user quotes when reporting a call."""
    message = claude.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert message._request_id and message._request_id.startswith("req_")
    counted = claude.messages.with_raw_response.count_tokens(model=MODEL, messages=HELLO)
    assert counted.request_id == counted.headers["x-request-id"]
    with claude.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
        assert stream.request_id == stream.response.headers["x-request-id"]
        assert stream.get_final_message().content[0].text
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="no-such-claude", max_tokens=50, messages=HELLO)
    assert info.value.request_id == info.value.body["request_id"] == info.value.response.headers["x-request-id"]
    sims["azure"].fault(status=400, times=1)  # an upstream's 4xx, answered after routing
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert info.value.request_id == info.value.body["request_id"]


def test_the_sdk_lists_and_retrieves_models_in_anthropics_shape(claude):
    """The anthropic SDK's `models.list()` and `models.retrieve()` (GET /v1/models with `anthropic-version`)
    read Anthropic's fields: `type`, `display_name`, `created_at` (a date), and a page with `has_more`."""
    page = claude.models.list()
    assert page.has_more is False and page.first_id == page.data[0].id and page.last_id == page.data[-1].id
    models = {m.id: m for m in page}
    assert MODEL in models and "claude-solo" in models
    for m in models.values():
        assert m.type == "model" and m.display_name == m.id and m.created_at.year >= 2024
    one = claude.models.retrieve(MODEL)
    assert (one.id, one.type, one.created_at) == (MODEL, "model", models[MODEL].created_at)
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.models.retrieve("no-such-claude")
    assert info.value.body["error"]["type"] == "not_found_error" and "no-such-claude" in info.value.message


def test_x_api_key_header_is_accepted(door):
    """Older anthropic SDKs and most Claude tools send the key as `x-api-key`."""
    client = anthropic.Anthropic(
        base_url=door.url, api_key=None, default_headers={"x-api-key": CLIENT_KEY}, max_retries=0
    )
    assert client.messages.create(model=MODEL, max_tokens=50, messages=HELLO).content[0].text


def test_system_prompt_reaches_the_model(claude):
    system = "You are terse and precise."
    plain = claude.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    with_system = claude.messages.create(
        model=MODEL, max_tokens=100, system=[{"type": "text", "text": system}], messages=HELLO
    )
    # One more message upstream: 3 tokens of framing plus the system text.
    assert with_system.usage.input_tokens - plain.usage.input_tokens == 3 + _tokens(system)


def test_max_tokens_and_stop_sequences(claude):
    cut = claude.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    assert cut.stop_reason == "max_tokens" and len(cut.content[0].text) <= 8
    stopped = claude.messages.create(model=MODEL, max_tokens=100, stop_sequences=["said"], messages=HELLO)
    assert stopped.content[0].text == "Hello from azure-eastus. You "
    assert stopped.stop_reason == "end_turn"  # OpenAI upstreams do not say whether a stop sequence matched


def test_dropped_parameters_are_reported(claude):
    raw = claude.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=50,
        extra_body={"top_k": 5},
        system=[{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
        messages=HELLO,
    )
    assert raw.headers["x-multihome-dropped-params"] == "cache_control,top_k"
    assert raw.parse().content[0].text


def test_streaming_text_and_final_message(claude):
    with claude.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 2, "text arrives as several deltas"
    assert "".join(pieces) == final.content[0].text == "Hello from azure-eastus. You said: Hello there"
    assert final.stop_reason == "end_turn"
    unary = claude.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    # Usage arrives in message_delta; the SDK's final message has the true totals.
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        unary.usage.input_tokens,
        unary.usage.output_tokens,
    )


def test_stream_event_order_on_the_wire(door):
    body = {"model": MODEL, "max_tokens": 100, "messages": HELLO, "stream": True, "tools": [WEATHER]}
    resp = httpx.post(door.url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY}, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["x-multihome-deployment"] == "az-claude"
    names = [line[7:] for line in resp.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1] == "content_block_start" and names[-3] == "content_block_stop"
    assert set(names[2:-3]) == {"content_block_delta"}
    assert '"type":"input_json_delta"' in resp.text


def test_image_input_is_routed_to_a_vision_deployment(claude):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "text", "text": "What is in this picture?"},
    ]
    raw = claude.messages.with_raw_response.create(
        model="claude-mixed", max_tokens=100, messages=[{"role": "user", "content": content}]
    )
    assert raw.headers["x-multihome-deployment"] == "oa-vision"
    assert raw.parse().content[0].text.endswith("I see 1 image(s).")


# --- a three-step tool-calling agent ------------------------------------------------------------


def _agent(claude, *, stream: bool) -> tuple[list, str]:
    """Ask, run the tools the model calls, send the results back; at most 5 model calls."""
    messages: list = [{"role": "user", "content": "What's the weather in Paris?"}]
    follow_up = {1: ("Now the local time there, please.", {"type": "tool", "name": "get_time"})}
    calls = []
    for step in range(5):
        kwargs = {"model": MODEL, "max_tokens": 200, "tools": [WEATHER, TIME], "messages": messages}
        kwargs["tool_choice"] = follow_up[step][1] if step in follow_up else {"type": "auto"}
        if stream:
            with claude.messages.stream(**kwargs) as s:
                reply = s.get_final_message()
        else:
            reply = claude.messages.create(**kwargs)
        if reply.stop_reason != "tool_use":
            return calls, reply.content[0].text
        uses = [b for b in reply.content if b.type == "tool_use"]
        calls.extend(uses)
        messages.append({"role": "assistant", "content": reply.content})
        results = [{"type": "tool_result", "tool_use_id": u.id, "content": TOOL_RESULTS[u.name]} for u in uses]
        text = [{"type": "text", "text": follow_up[step + 1][0]}] if step + 1 in follow_up else []
        messages.append({"role": "user", "content": results + text})
    raise AssertionError("the agent did not finish in 5 steps")


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_three_step_tool_agent_loop(claude, stream):
    calls, answer = _agent(claude, stream=stream)
    assert [(c.name, c.input) for c in calls] == [("get_weather", {"city": "example"}), ("get_time", {"tz": "CET"})]
    assert calls[0].id != calls[1].id
    # The model saw the second tool result, tied to the id of the call it answered.
    assert answer == f"Tool {calls[1].id} returned: 14:05 CET"


def test_parallel_tool_calls_stream_as_separate_blocks(claude):
    with claude.messages.stream(
        model=MODEL,
        max_tokens=200,
        tools=[WEATHER, TIME],
        messages=[{"role": "user", "content": "Do both in parallel"}],
    ) as s:
        final = s.get_final_message()
    assert [(b.type, b.name) for b in final.content] == [("tool_use", "get_weather"), ("tool_use", "get_time")]
    assert final.content[1].input == {"tz": "CET"}
    single = claude.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=[WEATHER, TIME],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Do both in parallel"}],
    )
    assert [b.name for b in single.content] == ["get_weather"]


# --- failover ------------------------------------------------------------------------------------


def test_primary_503_fails_over_and_headers_show_it(claude, sims):
    sims["azure"].fault(status=503, match="claude-az")
    raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert raw.headers["x-multihome-deployment"] == "oa-claude"
    attempts = raw.headers["x-multihome-attempts"]
    assert attempts.count("az-claude;outcome=http_503") == 2 and "oa-claude;outcome=ok" in attempts
    assert raw.parse().content[0].text == "Hello from openai. You said: Hello there"


def test_streaming_fails_over_before_the_first_byte(claude, sims):
    sims["azure"].fault(status=503, match="claude-az")
    with claude.messages.with_streaming_response.create(
        model=MODEL, max_tokens=100, messages=HELLO, stream=True
    ) as resp:
        assert resp.headers["x-multihome-deployment"] == "oa-claude"
        text = "".join(e.delta.text for e in resp.parse() if e.type == "content_block_delta")
    assert text == "Hello from openai. You said: Hello there"


# --- errors --------------------------------------------------------------------------------------


def test_missing_max_tokens_is_a_bad_request(claude):
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=MODEL, max_tokens=anthropic.omit, messages=HELLO)
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in info.value.body["error"]["message"]


def test_bad_key_is_an_authentication_error(door):
    bad = anthropic.Anthropic(base_url=door.url, api_key="wrong-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert info.value.body["error"]["type"] == "authentication_error"
    missing = httpx.post(door.url + "/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": HELLO})
    assert missing.status_code == 401 and "x-api-key" in missing.json()["error"]["message"]


def test_unknown_model_is_not_found(claude):
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="claude-nope", max_tokens=10, messages=HELLO)
    error = info.value.body["error"]
    assert error["type"] == "not_found_error" and "claude-sonnet" in error["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"model": "claude-sonnet", "max_tokens": ', "not valid JSON"),
        (b'{"model": "claude-sonnet", "max_tokens": "ten", "messages": []}', "max_tokens"),
        (
            b'{"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}',
            "messages[0].content",
        ),
        (
            b'{"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}',
            "messages.0.role",
        ),
        (  # Anthropic's API requires a tool_use block's input: it was taken as {}
            b'{"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}, '
            b'{"role": "assistant", "content": [{"type": "text", "text": "t"}, {"type": "tool_use", "id": "tu", '
            b'"name": "f"}]}, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu"}]}]}',
            "messages.1.content.1.input: Field required",
        ),
    ],
)
def test_malformed_bodies_are_400_in_anthropic_envelope(door, body, fragment):
    headers = {"x-api-key": CLIENT_KEY, "content-type": "application/json"}
    resp = httpx.post(door.url + "/v1/messages", content=body, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    assert fragment in resp.json()["error"]["message"]
    assert resp.headers["x-request-id"] == resp.json()["request_id"]


def test_every_deployment_down_is_503_naming_each_attempt(claude, sims):
    sims["azure"].fault(status=503)
    sims["openai"].fault(status=503)
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert info.value.status_code == 503
    assert info.value.body["error"]["type"] == "api_error"
    assert "az-claude" in info.value.body["error"]["message"] and "oa-claude" in info.value.body["error"]["message"]


def test_every_deployment_throttled_is_a_rate_limit_error_with_retry_after(claude, sims):
    sims["azure"].fault(throttle=5)
    sims["openai"].fault(throttle=5)
    with pytest.raises(anthropic.RateLimitError) as info:
        claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_mid_stream_cut_raises_in_the_sdk(claude, sims):
    sims["openai"].fault(cut_after=3, chunks=10, chunk_delay_ms=20, match="claude-solo")
    received = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model="claude-solo", max_tokens=100, messages=HELLO) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert received, "the client got the text produced before the cut"
    assert info.value.body["error"]["type"] == "api_error"
    assert "broke after" in info.value.body["error"]["message"] and "oa-solo" in info.value.body["error"]["message"]


def test_client_disconnect_cancels_the_upstream_call(door, sims):
    sims["openai"].fault(chunks=200, chunk_delay_ms=50, match="claude-solo")
    body = {"model": "claude-solo", "max_tokens": 1000, "messages": HELLO, "stream": True}
    with httpx.stream(
        "POST", door.url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY}, timeout=10
    ) as resp:
        assert resp.status_code == 200
        assert next(line for line in resp.iter_lines() if line == "event: content_block_delta")
    deadline = time.monotonic() + 60
    while sims["openai"].stats()["cancelled"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = sims["openai"].stats()
    assert stats["cancelled"] == 1 and stats["open_streams"] == 0


def test_oversized_body_and_wrong_content_type_use_the_anthropic_envelope(door):
    headers = {"x-api-key": CLIENT_KEY}
    big = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 300_000}]}
    too_large = httpx.post(door.url + "/v1/messages", json=big, headers=headers)
    assert too_large.status_code == 413 and too_large.json()["error"]["type"] == "request_too_large"
    text = httpx.post(door.url + "/v1/messages", content=b"hi", headers={**headers, "content-type": "text/plain"})
    assert text.status_code == 415 and text.json()["type"] == "error"


# --- Anthropic client -> gateway -> Anthropic upstream (when that adapter and simulator exist) -----

UPSTREAM_SECRETS = {"MH_AD_CLIENT_KEY": CLIENT_KEY, "MH_AD_ANTHROPIC_KEY": "sk-ant-door-secret-321"}


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    pytest.importorskip("multihome.simulators.anthropic.api")
    pytest.importorskip("multihome.providers.anthropic.adapter")
    from .processes import Simulator

    sim = Simulator("anthropic", "anthropic", "--api-key-env", "MH_AD_ANTHROPIC_KEY", env=UPSTREAM_SECRETS)
    try:
        cfg = single(
            simulated("anthropic", sim.url, key_env="MH_AD_ANTHROPIC_KEY"),
            model="claude-sonnet-4-5",
            names=("anthropic", "claude-up", "claude-native"),
            group_fields={"retries": 0},
            server=api_keys("MH_AD_CLIENT_KEY"),
        )
        gw = Gateway(cfg, tmp_path_factory.mktemp("native"), UPSTREAM_SECRETS)
    except Exception:
        sim.stop()
        raise
    yield anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    gw.stop()
    sim.stop()


def test_through_an_anthropic_upstream_text_and_stream(native):
    message = native.messages.create(model="claude-native", max_tokens=100, system="Be brief.", messages=HELLO)
    assert message.content[0].type == "text" and "Hello there" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0
    with native.messages.stream(model="claude-native", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text and "Hello there" in text


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_through_an_anthropic_upstream_tool_agent(native, stream):
    def ask(**kwargs):
        if stream:
            with native.messages.stream(**kwargs) as s:
                return s.get_final_message()
        return native.messages.create(**kwargs)

    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = ask(model="claude-native", max_tokens=200, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and set(use.input) == {"city"}
    messages += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]},
    ]
    second = ask(model="claude-native", max_tokens=200, tools=[WEATHER], messages=messages)
    assert second.stop_reason == "end_turn"
    assert "18C and sunny" in second.content[0].text


# --- the anthropic SDK's types, strictly -----------------------------------------------------------


def _typed(kind, obj: dict) -> dict:
    """`obj` as the anthropic SDK's `kind` validates it strictly (no coercion: a wrong literal, a missing
    field or a number sent as a string fails), the wire body as the gateway sent it."""
    pydantic.TypeAdapter(kind).validate_python(obj, strict=True)
    return obj


# Fields Anthropic's API reference lists on every message and usage, which the SDK's types leave optional.
MESSAGE_KEYS = {"id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"}
USAGE_KEYS = {"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"}


def _message(obj: dict) -> dict:
    _typed(anthropic.types.Message, obj)
    assert MESSAGE_KEYS <= obj.keys() and USAGE_KEYS <= obj["usage"].keys(), obj
    return obj


@pytest.mark.parametrize("upstream", ["door", "native"])
def test_every_answer_and_event_keeps_to_the_anthropic_sdk_types(upstream, request):
    if upstream == "door":  # Claude-named groups on OpenAI and Azure deployments; else an Anthropic upstream
        door = request.getfixturevalue("door")
        client, model = anthropic.Anthropic(base_url=door.url, api_key=CLIENT_KEY, max_retries=0, timeout=10), MODEL
    else:
        client, model = request.getfixturevalue("native"), "claude-native"
    plain = _message(
        client.messages.with_raw_response.create(model=model, max_tokens=100, messages=HELLO).http_response.json()
    )
    assert plain["stop_reason"] == "end_turn" and plain["stop_sequence"] is None
    ask = [{"role": "user", "content": "Weather and time, in parallel please"}]
    called = client.messages.with_raw_response.create(
        model=model, max_tokens=200, messages=ask, tools=[WEATHER, TIME], tool_choice={"type": "any"}
    )
    assert _message(called.http_response.json())["stop_reason"] == "tool_use"
    cut = client.messages.with_raw_response.create(model=model, max_tokens=2, messages=HELLO)
    assert _message(cut.http_response.json())["stop_reason"] == "max_tokens"
    counted = client.messages.with_raw_response.count_tokens(model=model, messages=HELLO)
    _typed(anthropic.types.MessageTokensCount, counted.http_response.json())

    for extra in ({}, {"tools": [WEATHER, TIME], "messages": ask}):
        body = {"model": model, "max_tokens": 100, "messages": HELLO, **extra}
        with client.messages.with_streaming_response.create(stream=True, **body) as raw:
            lines = list(raw.iter_lines())
        names = [line[7:] for line in lines if line.startswith("event: ")]
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert names == [e["type"] for e in events], "each event's name is its data's type"
        events = [e for e in events if e["type"] != "ping"]  # Anthropic's keep-alive, outside the SDK's union
        for event in events:
            _typed(anthropic.types.RawMessageStreamEvent, event)
        assert MESSAGE_KEYS <= events[0]["message"].keys() and USAGE_KEYS <= events[0]["message"]["usage"].keys()
        assert "output_tokens" in events[-2]["usage"]

    for do, status in (
        (lambda: client.messages.create(model="claude-nope", max_tokens=10, messages=HELLO), 404),
        (lambda: client.messages.create(model=model, max_tokens=anthropic.omit, messages=HELLO), 400),
        (lambda: client.messages.create(model=model, max_tokens=10, messages=[{"role": "bot", "content": "x"}]), 400),
    ):
        with pytest.raises(anthropic.APIStatusError) as info:
            do()
        assert info.value.status_code == status
        _typed(anthropic.types.ErrorResponse, info.value.response.json())
