"""Claude's extended thinking through Converse, judged by boto3's bedrock-runtime client: asked
with additionalModelRequestFields, answered with a signed reasoningContent block (unary and
ConverseStream), replayed only unchanged."""

from __future__ import annotations

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

AKID, SECRET, REGION = "AKIDCONVERSETHINK", "converse-think-secret", "us-east-1"
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
THINK = {"thinking": {"type": "enabled", "budget_tokens": 2048}}
TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]}
ASK = [{"role": "user", "content": [{"text": "use get_weather"}]}]


@pytest.fixture(scope="module")
def client():
    sim = start_simulator_in_thread(
        SimulatorConfig(kind="bedrock", region=REGION, aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    )
    yield boto3.session.Session().client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=sim.url,
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )
    sim.close()


def _converse(client, messages, **extra):
    return client.converse(
        modelId=MODEL,
        messages=messages,
        toolConfig=TOOLS,
        inferenceConfig={"maxTokens": 4096},
        additionalModelRequestFields=THINK,
        **extra,
    )


def test_reasoning_comes_first_signed_and_goes_back_unchanged(client):
    first = _converse(client, ASK)
    content = first["output"]["message"]["content"]
    reasoning = content[0]["reasoningContent"]["reasoningText"]
    assert reasoning["text"] and reasoning["signature"] and first["stopReason"] == "tool_use"
    use = next(b["toolUse"] for b in content if "toolUse" in b)
    result = {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "sunny"}]}}],
    }
    second = _converse(client, [*ASK, {"role": "assistant", "content": content}, result])
    assert second["stopReason"] == "end_turn"
    altered = [{**content[0], "reasoningContent": {"reasoningText": {**reasoning, "text": reasoning["text"] + "!"}}}]
    with pytest.raises(ClientError, match="Invalid `signature`"):
        _converse(client, [*ASK, {"role": "assistant", "content": altered + content[1:]}, result])


def test_converse_stream_carries_reasoning_deltas_and_the_signature(client):
    events = list(
        client.converse_stream(
            modelId=MODEL,
            messages=[{"role": "user", "content": [{"text": "Hello there"}]}],
            inferenceConfig={"maxTokens": 4096},
            additionalModelRequestFields=THINK,
        )["stream"]
    )
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    text = "".join(d["delta"]["reasoningContent"].get("text", "") for d in deltas if d["contentBlockIndex"] == 0)
    assert "Hello there" in text
    assert any("signature" in d["delta"].get("reasoningContent", {}) for d in deltas)
    assert "Hello there" in "".join(d["delta"].get("text", "") for d in deltas if d["contentBlockIndex"] == 1)


def test_thinkings_rules_reach_the_caller(client):
    with pytest.raises(ClientError, match="budget_tokens: Input should be greater than or equal to 1024"):
        client.converse(
            modelId=MODEL,
            messages=ASK,
            inferenceConfig={"maxTokens": 4096},
            additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 100}},
        )


# -- models other than Claude: unsigned reasoningContent (gpt-oss, DeepSeek-R1) ----------------------------

GPT_OSS, DEEPSEEK = "openai.gpt-oss-120b-1:0", "us.deepseek.r1-v1:0"


@pytest.mark.parametrize("model", [GPT_OSS, DEEPSEEK])
def test_open_weight_reasoning_parses_in_botocore_unsigned(client, model):
    reply = client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "Hello there"}]}])
    content = reply["output"]["message"]["content"]
    reasoning = content[0]["reasoningContent"]["reasoningText"]
    assert "Hello there" in reasoning["text"] and "signature" not in reasoning
    assert "Hello there" in content[1]["text"]
    events = list(
        client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": "Hello there"}]}])[
            "stream"
        ]
    )
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    thought = [d["delta"]["reasoningContent"] for d in deltas if "reasoningContent" in d["delta"]]
    assert "Hello there" in "".join(r.get("text", "") for r in thought)
    assert not any("signature" in r for r in thought)


def test_gpt_oss_takes_reasoning_effort_and_refuses_a_signature_back(client):
    ask = [{"role": "user", "content": [{"text": "Hello there"}]}]
    high = client.converse(modelId=GPT_OSS, messages=ask, additionalModelRequestFields={"reasoning_effort": "high"})
    assert "high effort" in high["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]["text"]
    with pytest.raises(ClientError, match="reasoning_effort"):
        client.converse(modelId=GPT_OSS, messages=ask, additionalModelRequestFields={"reasoning_effort": "max"})
    signed = {"reasoningContent": {"reasoningText": {"text": "thought", "signature": "c2ln"}}}
    history = [*ask, {"role": "assistant", "content": [signed, {"text": "Hi"}]}, *ask]
    with pytest.raises(ClientError, match="doesn't support the reasoningContent.reasoningText.signature field"):
        client.converse(modelId=GPT_OSS, messages=history)
