"""Claude on Microsoft Foundry end to end: the real gateway process, the foundry_anthropic simulator
(checking Azure's credentials) and the official openai SDK as the client. The example config
examples/claude-three-paths.yaml, pointed at simulators, shows each hop of Anthropic -> Bedrock ->
Foundry failover; an Entra ID provider fetches its token through azure-identity."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import yaml

from builders import deployment, group, simulated

from . import stacks
from .helpers import attempts
from .processes import Simulator
from .stacks import gateway_stack
from .test_entra import IDENTITY_HEADER, TOKEN, _TokenEndpoint, managed_identity

sims, client = stacks.sims, stacks.client  # fixtures: each test's cleared simulators and SDK client

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "mh-foundry-client-key"
FOUNDRY_KEY = "foundry-azure-key-0123"
ANTHROPIC_KEY = "sk-ant-upstream-0123"
AKID, SECRET = "AKIDFOUNDRYTEST1", "foundry-test-aws-secret-0123456789"
USER = [{"role": "user", "content": "Hello there"}]


def _config(urls: dict[str, str]) -> dict:
    """examples/claude-three-paths.yaml with its endpoints moved to the simulators, plus a Foundry
    provider that authenticates with Entra ID."""
    cfg = yaml.safe_load((ROOT / "examples/claude-three-paths.yaml").read_text())
    cfg["server"] = {"api_keys_env": ["MULTIHOME_API_KEY"]}
    for name, provider in cfg["providers"].items():
        provider["endpoint"] = urls[name]
    cfg["providers"]["foundry-entra"] = simulated("foundry_anthropic", urls["foundry-entra"], auth={"entra": {}})
    cfg["deployments"]["claude@foundry-entra"] = deployment("foundry-entra", "claude-sonnet-4-5")
    cfg["model_groups"]["claude-entra"] = group("claude@foundry-entra", retries=0)
    cfg["model_groups"]["claude-foundry"] = group("claude@foundry", retries=0)
    return cfg


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("foundry")
    with managed_identity() as identity_env:
        creds = tmp / "credentials"
        creds.write_text(f"[multihome]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n")
        secrets = {
            "SIM_FOUNDRY_KEY": FOUNDRY_KEY,
            "SIM_ANT_KEY": ANTHROPIC_KEY,
            "SIM_AKID": AKID,
            "SIM_SECRET": SECRET,
            "SIM_TOKEN": TOKEN,
        }
        with gateway_stack(CLIENT_KEY, secrets=(FOUNDRY_KEY, ANTHROPIC_KEY, SECRET, TOKEN, IDENTITY_HEADER)) as s:
            s.sims["anthropic"] = Simulator("anthropic", "anthropic-sim", "--api-key-env", "SIM_ANT_KEY", env=secrets)
            s.sims["bedrock-us"] = Simulator(
                "bedrock",
                "bedrock-sim",
                "--region",
                "us-east-1",
                "--aws-access-key-id-env",
                "SIM_AKID",
                "--aws-secret-access-key-env",
                "SIM_SECRET",
                env=secrets,
            )
            s.sims["foundry"] = Simulator(
                "foundry_anthropic", "foundry-sim", "--api-key-env", "SIM_FOUNDRY_KEY", env=secrets
            )
            s.sims["foundry-entra"] = Simulator(
                "foundry_anthropic", "foundry-entra-sim", "--entra-token-env", "SIM_TOKEN", env=secrets
            )
            env = {
                "MULTIHOME_API_KEY": CLIENT_KEY,
                "ANTHROPIC_UPSTREAM_KEY": ANTHROPIC_KEY,
                "FOUNDRY_UPSTREAM_KEY": FOUNDRY_KEY,
                "AWS_SHARED_CREDENTIALS_FILE": str(creds),
                "AWS_CONFIG_FILE": str(tmp / "no-config"),
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ACCESS_KEY_ID": "",
                "AWS_SECRET_ACCESS_KEY": "",
                "AWS_SESSION_TOKEN": "",
                "AWS_PROFILE": "",
                **identity_env,
            }
            s.start(_config({n: sim.url for n, sim in s.sims.items()}), tmp, env)
            yield s


def test_chat_reaches_foundrys_messages_call_with_the_azure_key(client, sims):
    raw = client.chat.completions.with_raw_response.create(model="claude-foundry", messages=USER, max_tokens=50)
    reply = raw.parse()
    assert "Hello there" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert raw.headers["x-multihome-deployment"] == "claude@foundry"
    sent = sims["foundry"].requests()
    assert [(r["path"], r["auth"]) for r in sent] == [("/anthropic/v1/messages", True)]


def test_stream_through_foundry(client, sims):
    stream = client.chat.completions.create(
        model="claude-foundry", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Hello there" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_each_hop_of_anthropic_bedrock_foundry_failover(client, sims):
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "claude@anthropic"

    sims["anthropic"].fault(status=529)
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "claude@bedrock"
    assert attempts(raw) == [("claude@anthropic", "http_529"), ("claude@bedrock", "ok")]

    sims["bedrock-us"].fault(status=503)
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "claude@foundry"
    assert attempts(raw) == [
        ("claude@anthropic", "http_529"),
        ("claude@bedrock", "http_503"),
        ("claude@foundry", "ok"),
    ]
    assert "Hello there" in (raw.parse().choices[0].message.content or "")
    assert len(sims["foundry"].requests()) == 1


def test_a_foundry_throttle_is_capacity_not_a_client_error(client, sims):
    sims["foundry"].fault(throttle=30)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="claude-foundry", messages=USER)
    assert info.value.status_code == 429


def test_entra_id_token_from_azure_identity(client, sims):
    for _ in range(2):
        reply = client.chat.completions.create(model="claude-entra", messages=USER)
        assert "Hello there" in (reply.choices[0].message.content or "")
    assert [r["auth"] for r in sims["foundry-entra"].requests()] == [True, True]
    assert len(_TokenEndpoint.calls) == 1, "the token is cached, not fetched per call"
    assert _TokenEndpoint.calls[0]["resource"] == "https://ai.azure.com"


def test_anthropic_sdk_at_the_front_door_reaches_foundry(stack, sims):
    """Claude-native clients too: the anthropic SDK against the gateway's /v1/messages, served by Foundry."""
    client = stack.anthropic()
    msg = client.messages.create(model="claude-foundry", max_tokens=50, messages=USER)
    assert msg.content[0].type == "text" and "Hello there" in msg.content[0].text
    with client.messages.stream(model="claude-foundry", max_tokens=50, messages=USER) as stream:
        assert "Hello there" in "".join(stream.text_stream)
    assert [r["path"] for r in sims["foundry"].requests()] == ["/anthropic/v1/messages"] * 2
