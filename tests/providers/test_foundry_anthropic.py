"""Claude on Microsoft Foundry (`foundry_anthropic`): the anthropic adapter with Foundry's URL and
auth, and a deployment's own data zone reaching the routing catalog (residency policy reads it)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from builders import api_keys, config, deployment, group, provider, single, typed, yaml_text
from multihome.config import ConfigError, parse_config
from multihome.providers.registry import build_adapter
from multihome.routing.catalog import Catalog
from multihome.schema.chat import parse_chat

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
