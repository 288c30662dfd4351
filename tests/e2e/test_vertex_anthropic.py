"""Claude on Vertex AI end to end: the real gateway process running examples/claude-on-vertex.yaml
pointed at three vertex_anthropic simulators (the EU multi-region, europe-west1, global), each
signing the gateway in through google-auth's real service-account flow at its own token endpoint;
the official openai and anthropic SDKs as clients; each hop of the failover; and an EU-only tenant
that is never sent to the global endpoint."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import yaml

from builders import database, identity
from google_sa import new_key, public_pem, service_account_file

from . import stacks
from .helpers import attempts, tenant_with_key, until
from .processes import Simulator
from .stacks import gateway_stack
from .stores import head_database

sims, client = stacks.sims, stacks.client  # fixtures: each test's cleared simulators and SDK client

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "mh-vertex-claude-client-key"
ADMIN_KEY = "mh-vertex-claude-admin-key"
USER = [{"role": "user", "content": "Hello there"}]
LOCATIONS = {"vertex-eu": "eu", "vertex-belgium": "europe-west1", "vertex-global": "global"}
MODEL = "claude-sonnet-4-5@20250929"


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vertex-claude")
    key = new_key()
    (tmp / "public.pem").write_text(public_pem(key))
    with gateway_stack(CLIENT_KEY, secrets=("PRIVATE KEY", "ya29.")) as s:
        for name, location in LOCATIONS.items():
            s.sims[name] = Simulator(
                "vertex_anthropic", name, "--region", location, "--google-public-key-file", str(tmp / "public.pem")
            )
        cfg = yaml.safe_load((ROOT / "examples/claude-on-vertex.yaml").read_text())
        cfg["server"] = {"api_keys_env": ["MULTIHOME_API_KEY"]}
        cfg["storage"] = database(head_database(request, "sqlite", tmp))
        cfg["identity"] = identity("MH_ADMIN_KEY")
        env = {"MULTIHOME_API_KEY": CLIENT_KEY, "MH_ADMIN_KEY": ADMIN_KEY}
        for name, provider in cfg["providers"].items():
            provider["endpoint"] = s.sims[name].url
            # One service account per endpoint: each simulator is its own token endpoint.
            var = f"SA_{name.replace('-', '_').upper()}"
            provider["auth"] = {"google": {"service_account_file_env": var}}
            env[var] = str(service_account_file(tmp / f"{name}.json", key, s.sims[name].url + "/token"))
        s.start(cfg, tmp, env)
        yield s


def test_chat_reaches_raw_predict_with_a_google_token(client, sims):
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER, max_tokens=50)
    reply = raw.parse()
    assert "Hello there" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert raw.headers["x-multihome-deployment"] == "claude@vertex-eu"
    sent = sims["vertex-eu"].requests()
    path = f"/v1/projects/my-gcp-project/locations/eu/publishers/anthropic/models/{MODEL}:rawPredict"
    assert [(r["path"], r["auth"]) for r in sent] == [(path, True)]


def test_stream_and_tools_through_stream_raw_predict(client, sims):
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
    assert reply.choices[0].finish_reason == "tool_calls"
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert [r["path"].rsplit(":", 1)[1] for r in sims["vertex-eu"].requests()] == ["streamRawPredict", "rawPredict"]


def test_each_hop_of_the_failover(client, sims):
    sims["vertex-eu"].fault(status=503)
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert attempts(raw) == [("claude@vertex-eu", "http_503"), ("claude@vertex-belgium", "ok")]
    sims["vertex-belgium"].fault(throttle=30)
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert attempts(raw) == [
        ("claude@vertex-eu", "http_503"),
        ("claude@vertex-belgium", "http_429"),
        ("claude@vertex-global", "ok"),
    ]
    assert "Hello there" in (raw.parse().choices[0].message.content or "")


def test_anthropic_sdk_at_the_front_door_reaches_vertex(stack, sims):
    client = stack.anthropic()
    msg = client.messages.create(model="claude", max_tokens=50, messages=USER)
    assert msg.content[0].type == "text" and "Hello there" in msg.content[0].text
    with client.messages.stream(model="claude", max_tokens=50, messages=USER) as stream:
        assert "Hello there" in "".join(stream.text_stream)
    assert [r["path"].rsplit(":", 1)[1] for r in sims["vertex-eu"].requests()] == ["rawPredict", "streamRawPredict"]


def test_an_eu_only_tenant_is_never_sent_to_the_global_endpoint(stack, sims):
    admin = httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    tenant, key = tenant_with_key(admin, "eu-only")
    policy = {"scope": "tenant", "rules": [{"effect": "allow", "data_zones": ["EU"]}], "description": "EU only"}
    assert admin.post(f"/admin/v1/tenants/{tenant}/policies", json=policy).status_code == 201
    client = stack.openai(key)
    sims["vertex-eu"].fault(status=503)
    sims["vertex-belgium"].fault(status=503)

    def refused() -> openai.APIStatusError | None:
        try:
            client.chat.completions.create(model="claude", messages=USER)
        except openai.APIStatusError as exc:
            return exc if "vertex-global: denied by policy" in exc.message else None
        return None

    until(refused, timeout=20, what="the EU-only policy to reach the router")
    sims["vertex-global"].reset()  # what it got before the policy was loaded does not count
    sims["vertex-eu"].fault(status=503)
    sims["vertex-belgium"].fault(status=503)
    err = refused()
    assert err is not None and err.status_code >= 500
    assert sims["vertex-global"].requests() == [], "an EU-only call reached the global endpoint"
    assert len(sims["vertex-belgium"].requests()) >= 1  # the EU deployments were tried
    sims["vertex-belgium"].reset()
    reply = client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert reply.headers["x-multihome-deployment"] == "claude@vertex-belgium"
