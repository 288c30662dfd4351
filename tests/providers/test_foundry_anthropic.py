"""Claude on Microsoft Foundry (`foundry_anthropic`): the anthropic adapter with Foundry's URL and
auth, and a deployment's own data zone reaching the routing catalog (residency policy reads it)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from builders import api_keys, config, deployment, group, provider, single, typed, yaml_text
from multihome.config import ConfigError, parse_config
from multihome.policy import EGRESS_DENIED, DeploymentFacts, EgressRule, Policy, PolicyEngine
from multihome.providers.registry import build_adapter
from multihome.routing.catalog import Catalog
from multihome.schema.chat import parse_chat
from multihome.schema.principal import Principal

CHAT = parse_chat(msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}]}))


def _adapter(endpoint: str, monkeypatch: pytest.MonkeyPatch, **fields):
    monkeypatch.setenv("FOUNDRY_KEY", "azure-key-1")
    cfg = typed(single(provider("foundry_anthropic", endpoint, key_env="FOUNDRY_KEY", **fields), server=api_keys("K")))
    return build_adapter("p", cfg.providers["p"])


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://res.services.ai.azure.com",
        "https://res.services.ai.azure.com/",
        "https://res.services.ai.azure.com/anthropic",
        "https://res.services.ai.azure.com/anthropic/",
        "https://res.services.ai.azure.com/anthropic/v1",
    ],
)
def test_every_endpoint_form_reaches_the_messages_call(endpoint, monkeypatch):
    adapter = _adapter(endpoint, monkeypatch)
    request = asyncio.run(adapter.chat_request(CHAT, "claude-sonnet-4-5"))
    assert request.url == "https://res.services.ai.azure.com/anthropic/v1/messages"
    assert request.headers["x-api-key"] == "azure-key-1"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert msgspec.json.decode(request.body)["model"] == "claude-sonnet-4-5"  # the Foundry deployment name
    assert adapter.kind == "foundry_anthropic"


def test_the_anthropic_kind_keeps_its_own_url(monkeypatch):
    monkeypatch.setenv("ANT_KEY", "k")
    cfg = typed(single(provider("anthropic", key_env="ANT_KEY"), server=api_keys("K")))
    adapter = build_adapter("p", cfg.providers["p"])
    assert asyncio.run(adapter.chat_request(CHAT, "m")).url == "https://api.anthropic.com/v1/messages"
    assert adapter.kind == "anthropic"


def test_entra_and_a_key_are_not_both_allowed():
    cfg = single(
        provider("foundry_anthropic", "https://r.services.ai.azure.com", auth={"api_key_env": "K", "entra": {}}),
        server=api_keys("K"),
    )
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text(cfg))
    assert "providers.p.auth: set one of api_key_env, entra, not several" in info.value.problems


def test_a_deployment_data_zone_overrides_its_providers(monkeypatch):
    """One Foundry resource, a Global Standard and a US Data Zone deployment: policy sees each zone."""
    monkeypatch.setenv("FOUNDRY_KEY", "k")
    cfg = typed(
        config(
            providers={
                "foundry": provider(
                    "foundry_anthropic", "https://r.services.ai.azure.com", key_env="FOUNDRY_KEY", data_zone="global"
                )
            },
            deployments={
                "claude-global": deployment("foundry", "claude-sonnet-4-5"),
                "claude-us": deployment("foundry", "claude-sonnet-4-5-us", data_zone="US"),
            },
            model_groups={"claude": group("claude-global", "claude-us")},
            server=api_keys("K"),
        )
    )
    catalog = Catalog(cfg)
    assert catalog.deployments["claude-global"].data_zone == "global"
    assert catalog.deployments["claude-us"].data_zone == "US"


def test_an_eu_only_tenant_never_reaches_a_global_or_us_foundry_deployment(monkeypatch):
    """Residency reads the deployment's zone, not only its provider's: one Foundry resource with a
    Global Standard and a US Data Zone deployment, and an EU resource beside it."""
    monkeypatch.setenv("FOUNDRY_KEY", "k")
    foundry = "https://r.services.ai.azure.com"
    cfg = typed(
        config(
            providers={
                "foundry": provider("foundry_anthropic", foundry, key_env="FOUNDRY_KEY", data_zone="Global"),
                "foundry-eu": provider(
                    "foundry_anthropic", foundry, key_env="FOUNDRY_KEY", region="swedencentral", data_zone="EU"
                ),
            },
            deployments={
                "claude-global": deployment("foundry", "claude-sonnet-4-5"),
                "claude-us": deployment("foundry", "claude-sonnet-4-5-us", data_zone="US"),
                "claude-eu": deployment("foundry-eu", "claude-sonnet-4-5"),
            },
            model_groups={"claude": group("claude-global", "claude-us", "claude-eu")},
            server=api_keys("K"),
        )
    )
    catalog = Catalog(cfg)
    facts = [
        DeploymentFacts(d.name, d.provider, cfg.providers[d.provider].kind, d.region, d.data_zone)
        for d in catalog.groups["claude"].deployments
    ]
    eu_only = Policy("p_eu", "acme", "tenant", rules=[EgressRule("allow", data_zones=["EU"])])
    engine = PolicyEngine.from_rows([eu_only], [], [])
    caller = Principal(tenant="acme", subject="u", source="static")
    decision = engine.decide(caller, "claude", "chat", facts)
    assert decision.allowed and decision.deployments == {"claude-eu"}
    assert set(decision.denied) == {"claude-global", "claude-us"}
    # With the EU deployment gone, the call is refused rather than sent to a Global or US one.
    gone = engine.decide(caller, "claude", "chat", [f for f in facts if f.name != "claude-eu"])
    assert not gone.allowed and gone.code == EGRESS_DENIED and not gone.deployments
