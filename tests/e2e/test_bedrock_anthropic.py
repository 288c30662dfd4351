"""Claude on Amazon Bedrock end to end: the real gateway running examples/claude-on-bedrock.yaml
pointed at two Bedrock simulators (eu-west-1 serving InvokeModel with Claude's body, us-east-1
serving Converse), SigV4 from botocore's credential chain, the official openai and anthropic SDKs
as clients; each hop of the failover; and an EU-only tenant that only ever reaches the eu. profile."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from builders import database, identity

from . import stacks
from .helpers import attempts, aws_env, tenant_with_key, until
from .processes import Simulator
from .stacks import gateway_stack
from .stores import head_database

sims, client = stacks.sims, stacks.client  # fixtures: each test's cleared simulators and SDK client

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "mh-bedrock-claude-client-key"
ADMIN_KEY = "mh-bedrock-claude-admin-key"
AKID, SECRET = "AKIDBEDROCKCLAUDE1", "bedrock-claude-e2e-secret-0123"
USER = [{"role": "user", "content": "Hello there"}]
PROFILE = "anthropic.claude-sonnet-4-5-20250929-v1%3A0"


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bedrock-claude")
    secrets = {"SIM_AKID": AKID, "SIM_SECRET": SECRET}
    aws = ("--aws-access-key-id-env", "SIM_AKID", "--aws-secret-access-key-env", "SIM_SECRET")
    with gateway_stack(CLIENT_KEY, secrets=(SECRET,)) as s:
        s.sims["bedrock-eu"] = Simulator("bedrock_anthropic", "bedrock-eu", "--region", "eu-west-1", *aws, env=secrets)
        s.sims["bedrock-us"] = Simulator("bedrock", "bedrock-us", "--region", "us-east-1", *aws, env=secrets)
        cfg = yaml.safe_load((ROOT / "examples/claude-on-bedrock.yaml").read_text())
        cfg["server"] = {"api_keys_env": ["MULTIHOME_API_KEY"]}
        cfg["storage"] = database(head_database(request, "sqlite", tmp))
        cfg["identity"] = identity("MH_ADMIN_KEY")
        for name, provider in cfg["providers"].items():
            provider["endpoint"] = s.sims[name].url
        s.start(cfg, tmp, {"MULTIHOME_API_KEY": CLIENT_KEY, "MH_ADMIN_KEY": ADMIN_KEY, **aws_env(tmp, AKID, SECRET)})
        yield s


def test_chat_goes_through_invoke_model_with_claudes_body(client, sims):
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER, max_tokens=60)
    assert raw.headers["x-multihome-deployment"] == "claude@bedrock-global"
    assert "Hello there" in (raw.parse().choices[0].message.content or "")
    sent = sims["bedrock-eu"].requests()
    assert [(r["path"], r["auth"]) for r in sent] == [(f"/model/global.{PROFILE}/invoke", True)]
    body = json.loads(sent[0]["body"])
    assert body["anthropic_version"] == "bedrock-2023-05-31" and "model" not in body and body["max_tokens"] == 60


def test_stream_and_tools(client, sims):
    stream = client.chat.completions.create(
        model="claude", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "Hello there" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "use get_weather"}], tools=tools
    )
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    paths = [r["path"].rsplit("/", 1)[1] for r in sims["bedrock-eu"].requests()]
    assert paths == ["invoke-with-response-stream", "invoke"]


def test_each_hop_invoke_then_converse_then_the_eu_profile(client, sims):
    sims["bedrock-eu"].fault(throttle=30, match=f"global.{PROFILE.replace('%3A', ':')}")
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert attempts(raw) == [("claude@bedrock-global", "http_429"), ("claude@bedrock-us", "ok")]
    assert sims["bedrock-us"].requests()[-1]["path"] == f"/model/us.{PROFILE}/converse"
    sims["bedrock-us"].fault(status=503)
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert attempts(raw) == [
        ("claude@bedrock-global", "http_429"),
        ("claude@bedrock-us", "http_503"),
        ("claude@bedrock-eu", "ok"),
    ]


def test_anthropic_sdk_at_the_front_door(stack, sims):
    client = stack.anthropic()
    msg = client.messages.create(model="claude", max_tokens=50, messages=USER)
    assert "Hello there" in msg.content[0].text
    with client.messages.stream(model="claude", max_tokens=50, messages=USER) as stream:
        assert "Hello there" in "".join(stream.text_stream)


def test_an_eu_only_tenant_only_reaches_the_eu_profile(stack, sims):
    admin = httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    tenant, key = tenant_with_key(admin, "eu-only")
    policy = {"scope": "tenant", "rules": [{"effect": "allow", "data_zones": ["EU"]}], "description": "EU only"}
    assert admin.post(f"/admin/v1/tenants/{tenant}/policies", json=policy).status_code == 201
    client = stack.openai(key)

    def served_by() -> str:
        return client.chat.completions.with_raw_response.create(model="claude", messages=USER).headers[
            "x-multihome-deployment"
        ]

    until(lambda: served_by() == "claude@bedrock-eu", timeout=20, what="the EU-only policy to reach the router")
    for sim in sims.values():
        sim.reset()
    assert served_by() == "claude@bedrock-eu"
    sims["bedrock-eu"].fault(status=503)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="claude", messages=USER)
    assert "claude@bedrock-global: denied by policy" in refused.value.message
    assert "claude@bedrock-us: denied by policy" in refused.value.message
    assert sims["bedrock-us"].requests() == []
    assert [r["path"] for r in sims["bedrock-eu"].requests()] == [f"/model/eu.{PROFILE}/invoke"] * 2
