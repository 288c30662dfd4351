"""Claude on Bedrock through InvokeModel (`bedrock_anthropic`): the Messages body Bedrock takes, the
event-stream of base64 `chunk`s read back into OpenAI chunks, Bedrock's errors; and the data zone
of cross-region inference profiles (both Bedrock kinds), which residency policy honours."""

from __future__ import annotations

import asyncio
import base64

import httpx
import msgspec
import pytest

from builders import api_keys, config, deployment, group, provider, single, typed, yaml_text
from multihome.config import ConfigError, parse_config
from multihome.policy import DeploymentFacts, EgressRule, Policy, PolicyEngine
from multihome.providers.anthropic.bedrock import InvokeStreamDecoder
from multihome.providers.base import CAPACITY, CLIENT_ERROR, CONTEXT_OVERFLOW
from multihome.providers.registry import build_adapter
from multihome.routing.catalog import Catalog
from multihome.schema.chat import parse_chat
from multihome.schema.principal import Principal
from multihome.simulators import SimulatorConfig, start_simulator_in_thread
from multihome.simulators.bedrock import eventstream as es

AKID, SECRET = "AKIDGATEWAYINVOKE", "gateway-invoke-secret"
MODEL = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"


def _chat(**extra) -> object:
    return parse_chat(msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}], **extra}))


def _adapter(monkeypatch, region="eu-central-1", endpoint=None):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fields = {"region": region} | ({"endpoint": endpoint} if endpoint else {})
    cfg = typed(single(provider("bedrock_anthropic", **fields), server=api_keys("K")))
    return build_adapter("p", cfg.providers["p"])


def test_the_body_is_bedrocks_messages_body(monkeypatch):
    adapter = _adapter(monkeypatch)
    request = asyncio.run(adapter.chat_request(_chat(stream=True, max_tokens=99), MODEL))
    body = msgspec.json.decode(request.body)
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["max_tokens"] == 99
    assert "model" not in body and "stream" not in body
    assert str(request.url) == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com/model/"
        "eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    )
    assert request.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert "/eu-central-1/bedrock/aws4_request" in request.headers["Authorization"]
    plain = asyncio.run(adapter.chat_request(_chat(), MODEL))
    assert str(plain.url).endswith("/invoke")


@pytest.fixture(scope="module")
def bedrock_sim():
    sim = start_simulator_in_thread(
        SimulatorConfig(
            kind="bedrock_anthropic", region="eu-central-1", aws_access_key_id=AKID, aws_secret_access_key=SECRET
        )
    )
    yield sim
    sim.close()


def _send(adapter, chat) -> httpx.Response:
    request = asyncio.run(adapter.chat_request(chat, MODEL))
    return httpx.post(str(request.url), content=request.body, headers=request.headers, timeout=10)


def test_a_signed_call_and_its_answer(bedrock_sim, monkeypatch):
    adapter = _adapter(monkeypatch, endpoint=bedrock_sim.url)
    answer = _send(adapter, _chat())
    assert answer.status_code == 200, answer.text
    completion = msgspec.json.decode(adapter.chat_response(answer.content, MODEL))
    assert "You said: hi" in completion["choices"][0]["message"]["content"]
    assert completion["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("piece", [1, 7, 1 << 20])
def test_the_stream_is_read_whatever_the_chunking(bedrock_sim, monkeypatch, piece):
    adapter = _adapter(monkeypatch, endpoint=bedrock_sim.url)
    raw = _send(adapter, _chat(stream=True, stream_options={"include_usage": True})).content
    decoder = adapter.stream_decoder(MODEL)
    out: list[bytes] = []
    for i in range(0, len(raw), piece):
        out += decoder.feed(raw[i : i + piece])
    out += decoder.end()
    assert out[-1] == b"[DONE]"
    chunks = [msgspec.json.decode(c) for c in out[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "You said: hi" in text
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_an_exception_frame_ends_the_stream_with_an_openai_error():
    decoder = InvokeStreamDecoder(MODEL)
    start = {"type": "message_start", "message": {"id": "msg_1", "model": MODEL, "usage": {"input_tokens": 3}}}
    chunk = es.event("chunk", {"bytes": base64.b64encode(msgspec.json.encode(start)).decode()})
    out = decoder.feed(chunk + es.exception("throttlingException", "Too many tokens, please wait."))
    error = msgspec.json.decode(out[-1])["error"]
    assert error["code"] == "throttlingException" and "Too many tokens" in error["message"]
    assert decoder.feed(chunk) == []  # nothing after the error


def test_a_corrupt_frame_or_chunk_is_a_value_error():
    good = es.event("chunk", {"bytes": base64.b64encode(b'{"type":"ping"}').decode()})
    with pytest.raises(ValueError, match="event-stream frame"):
        InvokeStreamDecoder(MODEL).feed(good[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="unreadable payload"):
        InvokeStreamDecoder(MODEL).feed(es.event("chunk", {"bytes": "%%% not base64"}))


@pytest.mark.parametrize(
    "status, error_type, message, outcome",
    [
        (429, "ThrottlingException", "Too many requests", CAPACITY),
        (400, "ValidationException", "Input is too long for requested model.", CONTEXT_OVERFLOW),
        (400, "ValidationException", "Malformed input request", CLIENT_ERROR),
    ],
)
def test_errors_are_read_as_bedrock_sends_them(monkeypatch, status, error_type, message, outcome):
    adapter = _adapter(monkeypatch)
    body = msgspec.json.encode({"message": message})
    assert adapter.classify_error(status, {"x-amzn-ErrorType": f"{error_type}:http://x"}, body).kind == outcome


# -- cross-region inference profiles and residency --------------------------------------------


@pytest.mark.parametrize("kind", ["bedrock", "bedrock_anthropic"])
@pytest.mark.parametrize(
    "region, model, zone",
    [
        ("us-east-1", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "US"),
        ("eu-west-1", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "EU"),
        ("ap-northeast-1", "apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "APAC"),
        ("ap-northeast-1", "jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "JP"),
        ("eu-west-1", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "Global"),
        ("eu-central-1", "anthropic.claude-3-haiku-20240307-v1:0", "EU"),  # a base model stays in its region
        ("eu-west-1", "arn:aws:bedrock:eu-west-1:123:inference-profile/eu.anthropic.claude-x-v1:0", "EU"),
    ],
)
def test_the_profile_fixes_the_data_zone(kind, region, model, zone):
    cfg = typed(
        config(
            providers={"p": provider(kind, region=region, data_zone="EU" if zone == "EU" else None)},
            deployments={"d": deployment("p", model)},
            model_groups={"g": group("d")},
            server=api_keys("K"),
        )
    )
    assert Catalog(cfg).deployments["d"].data_zone == zone


@pytest.mark.parametrize(
    "region, model, dep_zone, problem",
    [
        (
            "eu-west-1",
            "us.anthropic.claude-x-v1:0",
            None,
            "deployments.d.model: 'us.anthropic.claude-x-v1:0' is a us. cross-region inference profile; Bedrock "
            "serves it only from a source region in its geography (us-*), not from 'eu-west-1'",
        ),
        (
            "eu-west-1",
            "global.anthropic.claude-x-v1:0",
            "EU",
            "deployments.d.data_zone: 'EU' contradicts Claude on Amazon Bedrock (InvokeModel)'s data zone for "
            "model 'global.anthropic.claude-x-v1:0' in region 'eu-west-1', which is 'Global'",
        ),
    ],
)
def test_an_impossible_profile_or_a_contradicting_zone_is_refused(region, model, dep_zone, problem):
    dep = deployment("p", model, **({"data_zone": dep_zone} if dep_zone else {}))
    cfg = config(
        providers={"p": provider("bedrock_anthropic", region=region)},
        deployments={"d": dep},
        model_groups={"g": group("d")},
        server=api_keys("K"),
    )
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text(cfg))
    assert problem in info.value.problems


def test_an_eu_only_tenant_is_never_routed_to_a_us_or_global_profile():
    """One EU provider (eu-west-1, data_zone EU) holding an eu., a global. and a base-model
    deployment, and a US provider's us. profile: only the eu. and the in-region ones may serve."""
    cfg = typed(
        config(
            providers={
                "br-eu": provider("bedrock_anthropic", region="eu-west-1", data_zone="EU"),
                "br-us": provider("bedrock", region="us-east-1", data_zone="US"),
            },
            deployments={
                "eu-profile": deployment("br-eu", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"),
                "global-profile": deployment("br-eu", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
                "in-region": deployment("br-eu", "anthropic.claude-3-haiku-20240307-v1:0"),
                "us-profile": deployment("br-us", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            },
            model_groups={"claude": group("global-profile", "us-profile", "eu-profile", "in-region")},
            server=api_keys("K"),
        )
    )
    catalog = Catalog(cfg)
    facts = [
        DeploymentFacts(d.name, d.provider, cfg.providers[d.provider].kind, d.region, d.data_zone)
        for d in catalog.groups["claude"].deployments
    ]
    engine = PolicyEngine.from_rows(
        [Policy("p", "acme", "tenant", rules=[EgressRule("allow", data_zones=["EU"])])], [], []
    )
    decision = engine.decide(Principal(tenant="acme", subject="u", source="static"), "claude", "chat", facts)
    assert decision.deployments == {"eu-profile", "in-region"}
    assert set(decision.denied) == {"global-profile", "us-profile"}


def test_the_prompts_usage_is_known_from_the_streams_message_start():
    decoder = InvokeStreamDecoder(MODEL)
    start = {"type": "message_start", "message": {"id": "msg_1", "model": MODEL, "usage": {"input_tokens": 3}}}
    decoder.feed(es.event("chunk", {"bytes": base64.b64encode(msgspec.json.encode(start)).decode()}))
    assert decoder.start_usage is not None and decoder.start_usage.prompt_tokens == 3
