"""Claude on Vertex AI (`vertex_anthropic`): the anthropic adapter with Vertex's model URL, body
(`anthropic_version` in it, no `model`) and google-auth bearer; each location's endpoint and data
zone (global, the us/eu multi-regions, single regions) reaching the routing catalog and residency
policy; and config that names an impossible combination refused with its key path."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from builders import api_keys, config, deployment, group, provider, single, typed, yaml_text
from google_sa import new_key, public_pem, service_account_file
from multihome.config import ConfigError, parse_config
from multihome.policy import DeploymentFacts, EgressRule, Policy, PolicyEngine
from multihome.providers.registry import build_adapter
from multihome.routing.catalog import Catalog
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal
from multihome.simulators import SimulatorConfig, start_simulator_in_thread

CHAT = parse_chat(msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}]}))
STREAM = parse_chat(
    msgspec.json.encode({"model": "g", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
)
MODEL = "claude-sonnet-4-5@20250929"


def _vertex(region: str, **fields):
    return provider("vertex_anthropic", **{"region": region, "project": "proj-1", "auth": {"google": {}}, **fields})


@pytest.mark.parametrize(
    "region, host, zone",
    [
        ("global", "https://aiplatform.googleapis.com", "Global"),
        ("us", "https://aiplatform.us.rep.googleapis.com", "US"),
        ("eu", "https://aiplatform.eu.rep.googleapis.com", "EU"),
        ("us-east5", "https://us-east5-aiplatform.googleapis.com", "US"),
        ("europe-west1", "https://europe-west1-aiplatform.googleapis.com", "EU"),
        ("asia-southeast1", "https://asia-southeast1-aiplatform.googleapis.com", "APAC"),
    ],
)
def test_each_location_has_its_endpoint_and_data_zone(region, host, zone):
    cfg = typed(
        config(
            providers={"v": _vertex(region)},
            deployments={"claude": deployment("v", MODEL)},
            model_groups={"claude": group("claude")},
            server=api_keys("K"),
        )
    )
    adapter = build_adapter("v", cfg.providers["v"])
    adapter._tokens.bearer = _fixed_token  # no Google to ask here: the token flow is tested below
    request = asyncio.run(adapter.chat_request(CHAT, MODEL))
    assert request.url == f"{host}/v1/projects/proj-1/locations/{region}/publishers/anthropic/models/{MODEL}:rawPredict"
    assert Catalog(cfg).deployments["claude"].data_zone == zone


async def _fixed_token() -> str:
    return "ya29.test"


def test_the_body_has_the_vertex_version_and_no_model():
    cfg = typed(single(_vertex("us-east5"), server=api_keys("K")))
    adapter = build_adapter("p", cfg.providers["p"])
    adapter._tokens.bearer = _fixed_token
    request = asyncio.run(adapter.chat_request(STREAM, MODEL))
    body = msgspec.json.decode(request.body)
    assert "model" not in body and body["anthropic_version"] == "vertex-2023-10-16" and body["stream"] is True
    assert request.url.endswith(f"/models/{MODEL}:streamRawPredict")
    assert request.headers == {"content-type": "application/json", "authorization": "Bearer ya29.test"}


@pytest.mark.parametrize(
    "fields, dep_fields, problem",
    [
        (
            {"data_zone": "EU"},
            {},
            "providers.p.data_zone: 'EU' contradicts Claude on Vertex AI's data zone for region 'global', which is 'Global'",
        ),
        (
            {},
            {"data_zone": "EU"},
            "deployments.d.data_zone: 'EU' contradicts Claude on Vertex AI's data zone for model "
            f"'{MODEL}' in region 'global', which is 'Global'",
        ),
    ],
)
def test_a_data_zone_that_contradicts_the_location_is_refused(fields, dep_fields, problem):
    cfg = config(
        providers={"p": _vertex("global", **fields)},
        deployments={"d": deployment("p", MODEL, **dep_fields)},
        model_groups={"g": group("d")},
        server=api_keys("K"),
    )
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text(cfg))
    assert problem in info.value.problems


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"project": None}, "providers.p.project: required for kind 'vertex_anthropic'"),
        ({"region": None}, "providers.p.region: required for kind 'vertex_anthropic'"),
        (
            {"auth": {"api_key_env": "K"}},
            "providers.p.auth.api_key_env: only for kind",
        ),
    ],
)
def test_hostile_provider_config_names_the_key(fields, problem):
    prov = {**_vertex("us-east5"), **fields}
    prov = {k: v for k, v in prov.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text(single(prov, server=api_keys("K"))))
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_an_eu_only_tenant_never_reaches_the_global_or_us_endpoint():
    cfg = typed(
        config(
            providers={"v-global": _vertex("global"), "v-us": _vertex("us"), "v-eu": _vertex("eu")},
            deployments={
                "c-global": deployment("v-global", MODEL),
                "c-us": deployment("v-us", MODEL),
                "c-eu": deployment("v-eu", MODEL),
            },
            model_groups={"claude": group("c-global", "c-us", "c-eu")},
            server=api_keys("K"),
        )
    )
    catalog = Catalog(cfg)
    facts = [
        DeploymentFacts(d.name, d.provider, "vertex_anthropic", d.region, d.data_zone)
        for d in catalog.groups["claude"].deployments
    ]
    engine = PolicyEngine.from_rows(
        [Policy("p", "acme", "tenant", rules=[EgressRule("allow", data_zones=["EU"])])], [], []
    )
    decision = engine.decide(Principal(tenant="acme", subject="u", source="static"), "claude", "chat", facts)
    assert decision.deployments == {"c-eu"} and set(decision.denied) == {"c-global", "c-us"}


def test_the_adapter_signs_in_with_google_auth_and_the_simulator_answers(tmp_path, monkeypatch):
    """The whole path below the gateway: google-auth's JWT grant at the simulator's /token, the
    bearer it gets, the rawPredict call, the Anthropic answer translated to a chat.completion."""
    key = new_key()
    sim = start_simulator_in_thread(
        SimulatorConfig(kind="vertex_anthropic", region="us-east5", google_public_key=public_pem(key))
    )
    try:
        monkeypatch.setenv("SA_FILE", str(service_account_file(tmp_path / "sa.json", key, sim.url + "/token")))
        monkeypatch.setenv(
            "BAD_SA_FILE", str(service_account_file(tmp_path / "bad.json", new_key(), sim.url + "/token"))
        )
        good = _vertex("us-east5", endpoint=sim.url, auth={"google": {"service_account_file_env": "SA_FILE"}})
        adapter = build_adapter("p", typed(single(good, server=api_keys("K"))).providers["p"])
        request = asyncio.run(adapter.chat_request(CHAT, MODEL))
        import httpx

        answer = httpx.post(request.url, content=request.body, headers=request.headers, timeout=10)
        assert answer.status_code == 200
        completion = msgspec.json.decode(adapter.chat_response(answer.content, MODEL))
        assert completion["choices"][0]["message"]["content"] and completion["object"] == "chat.completion"

        bad = _vertex("us-east5", endpoint=sim.url, auth={"google": {"service_account_file_env": "BAD_SA_FILE"}})
        adapter = build_adapter("p", typed(single(bad, server=api_keys("K"))).providers["p"])
        with pytest.raises(ApiError) as err:
            asyncio.run(adapter.chat_request(CHAT, MODEL))
        assert err.value.status == 502 and "could not obtain a Google OAuth token" in str(err.value)
        assert "PRIVATE KEY" not in str(err.value)
    finally:
        sim.close()
