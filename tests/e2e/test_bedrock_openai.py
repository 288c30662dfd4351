"""OpenAI's open-weight models on Amazon Bedrock end to end: the real gateway running
examples/gpt-oss-on-bedrock.yaml pointed at a bedrock_openai simulator (Bedrock's OpenAI-compatible
Chat Completions endpoint, SigV4-checked) and a bedrock simulator (Converse), with the official
openai SDK as the client; the body passes through, and the hop to Converse is shown."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import yaml

from . import stacks
from .helpers import attempts, aws_env
from .processes import Simulator
from .stacks import gateway_stack

sims, client = stacks.sims, stacks.client  # fixtures: each test's cleared simulators and SDK client

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "mh-gpt-oss-client-key"
AKID, SECRET = "AKIDGPTOSSE2E00001", "gpt-oss-e2e-secret-0123456789"
USER = [{"role": "user", "content": "Hello there"}]
MODEL = "openai.gpt-oss-120b-1:0"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpt-oss")
    secrets = {"SIM_AKID": AKID, "SIM_SECRET": SECRET}
    aws = ("--region", "us-west-2", "--aws-access-key-id-env", "SIM_AKID", "--aws-secret-access-key-env", "SIM_SECRET")
    with gateway_stack(CLIENT_KEY, secrets=(SECRET,)) as s:
        s.sims["bedrock-openai"] = Simulator("bedrock_openai", "bedrock-openai", *aws, env=secrets)
        s.sims["bedrock"] = Simulator("bedrock", "bedrock-converse", *aws, env=secrets)
        cfg = yaml.safe_load((ROOT / "examples/gpt-oss-on-bedrock.yaml").read_text())
        cfg["server"] = {"api_keys_env": ["MULTIHOME_API_KEY"]}
        for name, provider in cfg["providers"].items():
            provider["endpoint"] = s.sims[name].url
        s.start(cfg, tmp, {"MULTIHOME_API_KEY": CLIENT_KEY, **aws_env(tmp, AKID, SECRET)})
        yield s


def test_the_body_passes_through_to_the_compatible_endpoint(client, sims):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-oss", messages=USER, max_completion_tokens=77, reasoning_effort="low", seed=3
    )
    assert raw.headers["x-multihome-deployment"] == "gpt-oss@chat-completions"
    assert "Hello there" in (raw.parse().choices[0].message.content or "")
    sent = sims["bedrock-openai"].requests()
    assert [(r["path"], r["auth"]) for r in sent] == [("/openai/v1/chat/completions", True)]
    body = json.loads(sent[0]["body"])
    assert body["model"] == MODEL and body["reasoning_effort"] == "low" and body["max_completion_tokens"] == 77


def test_stream_passes_through(client, sims):
    stream = client.chat.completions.create(
        model="gpt-oss", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "Hello there" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_throttled_compatible_endpoint_fails_over_to_converse(client, sims):
    sims["bedrock-openai"].fault(throttle=30)
    raw = client.chat.completions.with_raw_response.create(model="gpt-oss", messages=USER)
    assert attempts(raw) == [("gpt-oss@chat-completions", "http_429"), ("gpt-oss@converse", "ok")]
    assert sims["bedrock"].requests()[-1]["path"] == "/model/openai.gpt-oss-120b-1%3A0/converse"
    assert "Hello there" in (raw.parse().choices[0].message.content or "")


def test_an_image_is_refused_before_any_call(client, sims):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-oss", messages=[{"role": "user", "content": [image]}])
    assert 400 <= err.value.status_code < 500
    assert sims["bedrock-openai"].requests() == [] and sims["bedrock"].requests() == []


def test_anthropic_sdk_at_the_front_door_reaches_gpt_oss(stack, sims):
    client = stack.anthropic()
    msg = client.messages.create(model="gpt-oss", max_tokens=50, messages=USER)
    assert "Hello there" in msg.content[0].text
    with client.messages.stream(model="gpt-oss", max_tokens=50, messages=USER) as stream:
        assert "Hello there" in "".join(stream.text_stream)
    assert [r["path"] for r in sims["bedrock-openai"].requests()] == ["/openai/v1/chat/completions"] * 2
