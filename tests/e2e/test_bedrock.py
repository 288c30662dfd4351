"""Bedrock end to end: the real gateway process, the Bedrock simulator (SigV4-verifying, binary
event-stream) and the official openai SDK as the client."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from builders import api_keys, config, deployment, embedding, groups, simulated

from .processes import Gateway, Simulator

CLIENT_KEY = "mh-bedrock-client-key"
AKID, SECRET = "AKIDBEDROCKTEST1", "bedrock-test-secret-key-0123456789"
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
PRIMARY, SECONDARY = "anthropic.claude-primary-v1:0", "anthropic.claude-secondary-v1:0"
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()

ROLE = "arn:aws:iam::123456789012:role/"


def _config(sim: str, openai_url: str) -> dict:
    """The Bedrock simulator reached with good and bad credentials, and through assumed roles."""

    def bedrock(**aws) -> dict:
        return simulated("bedrock", sim, region="us-east-1", auth={"aws": aws})

    return config(
        server=api_keys("MH_BR_CLIENT_KEY"),
        providers={
            "bedrock": bedrock(profile="good"),
            "bedrock-bad": bedrock(profile="bad"),
            "bedrock-role": bedrock(profile="good", role_arn=ROLE + "multihome-bedrock"),
            "bedrock-role-denied": bedrock(profile="good", role_arn=ROLE + "denied-role"),
            "openai": simulated("openai", openai_url),
        },
        deployments={
            "br-main": deployment("bedrock", CLAUDE),
            "br-primary": deployment("bedrock", PRIMARY),
            "br-secondary": deployment("bedrock", SECONDARY),
            "br-bad": deployment("bedrock-bad", CLAUDE),
            "br-role": deployment("bedrock-role", CLAUDE),
            "br-role-denied": deployment("bedrock-role-denied", CLAUDE),
            "br-titan": embedding("bedrock", "amazon.titan-embed-text-v2:0"),
            "br-cohere": embedding("bedrock", "cohere.embed-english-v3"),
        },
        model_groups=groups(
            {
                "claude": "br-main",
                "claude-failover": ["br-primary", "br-secondary"],
                "claude-bad": "br-bad",
                "claude-role": "br-role",
                "claude-role-denied": "br-role-denied",
                "titan": "br-titan",
                "cohere": "br-cohere",
            },
            retries=0,
        ),
    )


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}},
        },
    },
]


@pytest.fixture(scope="module")
def bedrock_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bedrock")
    creds = tmp / "credentials"
    creds.write_text(
        f"[good]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"
        f"[bad]\naws_access_key_id = {AKID}\naws_secret_access_key = not-the-right-secret\n"
    )
    sim_env = {"MH_BR_AKID": AKID, "MH_BR_SECRET": SECRET}
    sim = Simulator(
        "bedrock",
        "bedrock-sim",
        "--region",
        "us-east-1",
        "--aws-access-key-id-env",
        "MH_BR_AKID",
        "--aws-secret-access-key-env",
        "MH_BR_SECRET",
        env=sim_env,
    )
    oai = Simulator("openai", "openai-sim")
    env = {
        "MH_BR_CLIENT_KEY": CLIENT_KEY,
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(tmp / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL_STS": sim.url,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_PROFILE": "",
    }
    gw = Gateway(_config(sim.url, oai.url), tmp, env)
    yield sim, gw
    log = gw.stop()
    sim.stop()
    oai.stop()
    assert SECRET not in log and "not-the-right-secret" not in log, "an AWS secret reached the gateway's log"


@pytest.fixture
def sim(bedrock_stack):
    s, _ = bedrock_stack
    s.reset()
    return s


@pytest.fixture
def br(bedrock_stack, sim) -> openai.OpenAI:
    _, gw = bedrock_stack
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15)


def _stream_text(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_chat_is_signed_translated_and_answered(br, sim):
    raw = br.chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}]
    )
    resp = raw.parse()
    assert raw.headers["x-multihome-deployment"] == "br-main"
    assert resp.choices[0].message.content == "Hello from bedrock-sim. You said: hi there"
    assert resp.choices[0].finish_reason == "stop"
    assert (
        resp.usage.prompt_tokens > 0
        and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    )
    entry = sim.requests()[-1]
    # The inference-profile id travels percent-encoded, exactly as botocore sends it (and signs it).
    assert entry["path"] == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert entry["outcome"] == "ok"


def test_stream_with_usage(br):
    stream = br.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from bedrock-sim. You said: stream please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_stream_without_usage_request_hides_usage_chunk(br):
    chunks = list(br.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}], stream=True))
    assert all(c.choices for c in chunks)


def test_tool_call(br):
    resp = br.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "example"}
    assert call.id.startswith("tooluse_")


def test_named_tool_choice(br):
    resp = br.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "time?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in resp.choices[0].message.tool_calls] == ["get_time"]
    assert json.loads(resp.choices[0].message.tool_calls[0].function.arguments) == {"tz": "UTC"}


def test_parallel_tool_calls_unary_and_stream(br):
    msgs = [{"role": "user", "content": "use parallel tools"}]
    resp = br.chat.completions.create(model="claude", messages=msgs, tools=TOOLS)
    assert [c.function.name for c in resp.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    calls: dict[int, dict] = {}
    for chunk in br.chat.completions.create(model="claude", messages=msgs, tools=TOOLS, stream=True):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            slot = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
            slot["id"] = tc.id or slot["id"]
            slot["name"] = (tc.function.name if tc.function else None) or slot["name"]
            slot["args"] += (tc.function.arguments or "") if tc.function else ""
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["args"]) == {"city": "example"} and json.loads(calls[1]["args"]) == {"tz": "UTC"}
    assert all(calls[i]["id"].startswith("tooluse_") for i in (0, 1)) and calls[0]["id"] != calls[1]["id"]


def _agent_step(br, messages, stream: bool):
    """One model call of an agent loop; returns the assistant message as a dict."""
    if not stream:
        msg = br.chat.completions.create(model="claude", messages=messages, tools=TOOLS).choices[0].message
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in msg.tool_calls or []
        ]
        return {"role": "assistant", "content": msg.content, **({"tool_calls": calls} if calls else {})}
    text, calls = "", {}
    for chunk in br.chat.completions.create(model="claude", messages=messages, tools=TOOLS, stream=True):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        text += d.content or ""
        for tc in d.tool_calls or []:
            slot = calls.setdefault(
                tc.index, {"id": tc.id, "type": "function", "function": {"name": tc.function.name, "arguments": ""}}
            )
            slot["function"]["arguments"] += tc.function.arguments or ""
    out = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = [calls[i] for i in sorted(calls)]
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_three_step_agent_loop(br, stream):
    messages = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "weather in Oslo?"}]
    steps = []
    for step in range(3):  # bounded: a real agent loop with a step budget
        msg = _agent_step(br, messages, stream)
        messages.append(msg)
        steps.append("tool" if msg.get("tool_calls") else "text")
        for call in msg.get("tool_calls") or []:
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": f"sunny ({call['function']['name']})"}
            )
        if step == 0:
            # A follow-up question right after the tool result: Bedrock needs both in one user turn.
            messages.append({"role": "user", "content": "and once more, please"})
    assert steps == ["tool", "tool", "text"]
    assert messages[-1]["content"].startswith("Tool tooluse_") and messages[-1]["content"].endswith(
        "returned: sunny (get_weather)"
    )


def test_image_data_url_and_https_refused(br):
    resp = br.chat.completions.create(
        model="claude",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": PNG}}],
            }
        ],
    )
    assert resp.choices[0].message.content.endswith("I see 1 image(s).")
    with pytest.raises(openai.BadRequestError) as err:
        br.chat.completions.create(
            model="claude",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
                }
            ],
        )
    assert "does not fetch image URLs" in err.value.message


def test_json_schema(br):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 18}},
        "required": ["name", "age"],
    }
    resp = br.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert json.loads(resp.choices[0].message.content) == {"name": "example", "age": 18}


def test_stop_and_max_tokens(br):
    resp = br.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stop=["bedrock"])
    assert resp.choices[0].message.content == "Hello from " and resp.choices[0].finish_reason == "stop"
    resp = br.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert resp.choices[0].finish_reason == "length" and resp.choices[0].message.content == "Hello fr"


def test_dropped_and_refused_parameters(br):
    raw = br.chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], seed=7, temperature=1.5, frequency_penalty=0.5
    )
    assert set(raw.headers["x-multihome-dropped-params"].split(",")) == {"seed", "temperature", "frequency_penalty"}
    with pytest.raises(openai.BadRequestError) as err:
        br.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], n=2)
    assert err.value.code == "unsupported_parameter"


def test_embeddings_titan_and_cohere(br):
    one = br.embeddings.create(model="titan", input="hello", dimensions=256)
    assert len(one.data) == 1 and len(one.data[0].embedding) == 256 and one.usage.prompt_tokens == 2
    raw = br.embeddings.with_raw_response.create(model="titan", input="hello", dimensions=256, encoding_format="base64")
    b64 = json.loads(raw.text)["data"][0]["embedding"]
    assert list(struct.unpack("<256f", base64.b64decode(b64))) == pytest.approx(one.data[0].embedding)
    many = br.embeddings.create(model="cohere", input=["a", "b", "c"])
    assert [d.index for d in many.data] == [0, 1, 2] and len(many.data[0].embedding) == 1024
    assert many.usage.prompt_tokens == 3  # from Bedrock's x-amzn-bedrock-input-token-count header (1 per text)
    with pytest.raises(openai.BadRequestError):
        br.embeddings.create(model="titan", input=["a", "b"])


def test_throttling_fails_over_to_another_deployment(br, sim):
    sim.fault(throttle=1, match=PRIMARY)
    raw = br.chat.completions.with_raw_response.create(
        model="claude-failover", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-multihome-deployment"] == "br-secondary"
    assert "br-primary;outcome=http_429" in raw.headers["x-multihome-attempts"]


def test_service_unavailable_fails_over_and_validation_does_not(br, sim):
    sim.fault(status=503, match=PRIMARY)
    raw = br.chat.completions.with_raw_response.create(
        model="claude-failover", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-multihome-deployment"] == "br-secondary"
    sim.fault(status=400, match=PRIMARY)
    with pytest.raises(openai.BadRequestError):
        br.chat.completions.create(model="claude-failover", messages=[{"role": "user", "content": "hi"}])


def test_corrupt_frame_mid_stream_raises_clean_api_error(br, sim):
    sim.fault(malformed_at=5, chunk_delay_ms=30, match=CLAUDE, times=1)
    stream = br.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "a b c d e f g"}], stream=True
    )
    seen = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            seen.append(chunk)
    assert seen and "corrupt upstream stream frame" in str(err.value.message)


def test_corrupt_first_frame_fails_over(br, sim):
    sim.fault(malformed_at=1, match=PRIMARY)
    raw = br.chat.completions.with_raw_response.create(
        model="claude-failover", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-multihome-deployment"] == "br-secondary"
    assert _stream_text(raw.parse()) == "Hello from bedrock-sim. You said: hi"


def test_cut_stream_raises(br, sim):
    sim.fault(cut_after=2, chunk_delay_ms=30, match=CLAUDE, times=1)
    stream = br.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)


def test_guardrail_is_a_content_filter_refusal(br, sim):
    sim.fault(content_filter="prompt", match=CLAUDE, times=1)
    resp = br.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].finish_reason == "content_filter"
    assert resp.choices[0].message.content == "Sorry, the model cannot answer this question."


def test_wrong_secret_is_a_502_credentials_error(br, sim):
    with pytest.raises(openai.APIStatusError) as err:
        br.chat.completions.create(model="claude-bad", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and "credentials" in err.value.message
    assert sim.requests()[-1]["outcome"] == "error:403"


def test_assume_role_signs_with_role_credentials(br, sim):
    resp = br.chat.completions.create(model="claude-role", messages=[{"role": "user", "content": "as a role"}])
    assert resp.choices[0].message.content == "Hello from bedrock-sim. You said: as a role"
    # The same config pointed at a role that STS refuses: proves the call goes through AssumeRole.
    with pytest.raises(openai.APIStatusError) as err:
        br.chat.completions.create(model="claude-role-denied", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and "AccessDenied" in err.value.message
