"""InvokeModel and InvokeModelWithResponseStream with Claude's Messages body (the bedrock simulator,
also started as the bedrock_anthropic kind), judged by two official clients: boto3's bedrock-runtime
(SigV4, rest-json, event-stream decoding) and the anthropic SDK's AnthropicBedrock."""

from __future__ import annotations

import base64
import json

import anthropic
import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

AKID, SECRET, REGION = "AKIDINVOKETEST", "invoke-sim-secret", "eu-central-1"
MODEL = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module", params=["bedrock", "bedrock_anthropic"])
def invoke_sim(request):
    sim = start_simulator_in_thread(
        SimulatorConfig(kind=request.param, region=REGION, aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    )
    yield sim
    sim.close()


@pytest.fixture
def sim(invoke_sim):
    invoke_sim.reset()
    return invoke_sim


def _boto(sim, secret=SECRET):
    return boto3.session.Session().client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=sim.url,
        aws_access_key_id=AKID,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )


def _body(**extra) -> bytes:
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": HI, **extra}).encode()


def test_invoke_model_with_boto3(sim):
    r = _boto(sim).invoke_model(modelId=MODEL, body=_body(), contentType="application/json", accept="application/json")
    message = json.loads(r["body"].read())
    assert message["type"] == "message" and "Hello there" in message["content"][0]["text"]
    assert message["stop_reason"] == "end_turn" and message["usage"]["input_tokens"] > 0
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-output-token-count"]) == message["usage"]["output_tokens"]
    assert sim.requests()[0]["path"] == "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"


def test_invoke_model_with_response_stream_with_boto3(sim):
    r = _boto(sim).invoke_model_with_response_stream(modelId=MODEL, body=_body())
    events = [json.loads(part["chunk"]["bytes"]) for part in r["body"]]
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in types
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert "Hello there" in text
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == events[-2]["usage"]["output_tokens"]


def test_the_raw_frame_carries_base64_bytes(sim):
    """What botocore decoded above is, on the wire, base64 JSON in the `chunk` event's `bytes`."""
    r = _boto(sim).invoke_model_with_response_stream(modelId=MODEL, body=_body())
    raw = r["body"]._raw_stream.read()
    assert b":event-type" in raw and b"chunk" in raw
    start = raw.index(b'{"bytes":"')
    encoded = raw[start + 10 : raw.index(b'"', start + 10)]
    assert json.loads(base64.b64decode(encoded))["type"] == "message_start"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"model": MODEL}, "extraneous key [model] is not permitted"),
        ({"stream": True}, "extraneous key [stream] is not permitted"),
        ({"anthropic_version": "2023-06-01"}, "Invalid API version"),
    ],
)
def test_what_bedrock_refuses_is_a_validation_exception(sim, extra, message):
    with pytest.raises(ClientError) as err:
        _boto(sim).invoke_model(modelId=MODEL, body=_body(**extra))
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert message in err.value.response["Error"]["Message"]


def test_a_missing_version_and_claudes_own_rules(sim):
    body = json.dumps({"max_tokens": 10, "messages": HI}).encode()
    with pytest.raises(ClientError, match=r"required key \[anthropic_version\] not found"):
        _boto(sim).invoke_model(modelId=MODEL, body=body)
    with pytest.raises(ClientError, match="max_tokens: Field required"):
        _boto(sim).invoke_model(
            modelId=MODEL, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "messages": HI}).encode()
        )


def test_a_wrong_signature_is_refused(sim):
    with pytest.raises(ClientError) as err:
        _boto(sim, secret="wrong").invoke_model(modelId=MODEL, body=_body())
    assert err.value.response["Error"]["Code"] in ("InvalidSignatureException", "UnrecognizedClientException")


def test_the_anthropic_sdks_bedrock_client(sim):
    client = anthropic.AnthropicBedrock(
        aws_access_key=AKID,
        aws_secret_key=SECRET,
        aws_region=REGION,
        base_url=sim.url,
        max_retries=0,
        timeout=10,
    )
    msg = client.messages.create(model=MODEL, max_tokens=50, messages=HI)
    assert "Hello there" in msg.content[0].text
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HI) as stream:
        assert "Hello there" in "".join(stream.text_stream)
        assert stream.get_final_message().stop_reason == "end_turn"
    tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}]
    msg = client.messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "use get_weather"}], tools=tools
    )
    assert msg.stop_reason == "tool_use"


def test_throttling_mid_call_is_a_throttling_exception(sim):
    sim.set_fault({"throttle": 5, "times": 1})
    with pytest.raises(ClientError) as err:
        _boto(sim).invoke_model(modelId=MODEL, body=_body())
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
