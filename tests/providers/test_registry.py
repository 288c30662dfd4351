"""The provider registry: every kind is complete (adapter, simulator, folders), the simulators'
own table of kinds agrees with it, and the config rules that used to be per-kind lists follow
from the descriptors."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from builders import api_keys, single, yaml_text
from multihome.config import ConfigError, parse_config
from multihome.providers.kind import ProviderKind
from multihome.providers.registry import BY_NAME, KINDS, NAMES
from multihome.simulators.app import ProviderApp
from multihome.simulators.kinds import APPS

SRC = Path(__file__).resolve().parents[2] / "src" / "multihome"


def test_names_are_unique_and_in_order() -> None:
    assert NAMES == tuple(k.name for k in KINDS)
    assert len(set(NAMES)) == len(NAMES)
    assert all(BY_NAME[k.name] is k for k in KINDS)


@pytest.mark.parametrize("kind", KINDS, ids=NAMES)
def test_every_kind_is_complete(kind: ProviderKind) -> None:
    adapter = importlib.import_module(kind.adapter)
    assert callable(adapter.build)
    package = kind.adapter.rpartition(".")[0]
    declared = vars(importlib.import_module(package)).values()
    assert any(d is kind for d in declared), f"{package} does not declare the {kind.name} descriptor"
    assert kind.name in APPS, f"no simulator for kind {kind.name}: add it to simulators/kinds.py"
    module, _, cls = APPS[kind.name].partition(":")
    assert issubclass(getattr(importlib.import_module(f"multihome.simulators.{module}"), cls), ProviderApp)
    # providers/<folder>/ and simulators/<folder>/ mirror each other
    folder = package.rpartition(".")[2]
    assert (SRC / "providers" / folder).is_dir() and (SRC / "simulators" / folder).is_dir()
    assert module.startswith(f"{folder}.")
    assert set(kind.auth_methods) <= {"api_key_env", "entra", "aws", "google"}
    assert kind.telemetry_name


def test_the_simulators_serve_exactly_the_registered_kinds() -> None:
    assert tuple(APPS) == NAMES


def _config(provider: str) -> str:
    """A config around one provider written as YAML (the provider is the subject)."""
    return yaml_text(single(yaml.safe_load(provider), server=api_keys("K")))


@pytest.mark.parametrize(
    "provider, message",
    [
        ("{kind: openai}", "providers.p.endpoint: required for kind 'openai'"),
        ("{kind: azure}", "providers.p.endpoint: required for kind 'azure'"),
        ("{kind: bedrock}", "providers.p.region: required for kind 'bedrock'"),
        ("{kind: vertex, project: x}", "providers.p.region: required for kind 'vertex'"),
        ("{kind: vertex, region: us-central1}", "providers.p.project: required for kind 'vertex'"),
        (
            '{kind: openai, endpoint: "https://x", auth: {entra: {}}}',
            "providers.p.auth.entra: only for kind azure or foundry_anthropic or azure_inference",
        ),
        (
            "{kind: anthropic, auth: {aws: {}}}",
            "providers.p.auth.aws: only for kind bedrock or bedrock_anthropic or bedrock_openai",
        ),
        ("{kind: foundry_anthropic}", "providers.p.endpoint: required for kind 'foundry_anthropic'"),
        ("{kind: azure_inference}", "providers.p.endpoint: required for kind 'azure_inference'"),
        ("{kind: gemini, auth: {google: {}}}", "providers.p.auth.google: only for kind vertex or vertex_anthropic"),
        (
            "{kind: vertex, region: r, project: x, auth: {api_key_env: K}}",
            "providers.p.auth.api_key_env: only for kind "
            + " or ".join(k.name for k in KINDS if "api_key_env" in k.auth_methods),
        ),
        (
            "{kind: bedrock, region: r, auth: {api_key_env: K, aws: {}}}",
            "providers.p.auth: set one of api_key_env, aws, not several",
        ),
    ],
)
def test_config_rules_come_from_the_descriptors(provider: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(provider))
    assert message in info.value.problems


@pytest.mark.parametrize(
    "provider",
    [
        "{kind: anthropic}",
        "{kind: gemini}",
        "{kind: bedrock, region: eu-west-1, auth: {aws: {}}}",
        "{kind: vertex, region: global, project: x, auth: {google: {}}}",
        '{kind: azure, endpoint: "https://x", auth: {entra: {}}}',
    ],
)
def test_kinds_with_a_public_endpoint_need_none(provider: str) -> None:
    parse_config(_config(provider))


def test_default_endpoints() -> None:
    cfg = parse_config(_config("{kind: bedrock, region: eu-west-1}"))
    assert BY_NAME["bedrock"].endpoint(cfg.providers["p"]) == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    cfg = parse_config(_config("{kind: vertex, region: global, project: x}"))
    assert BY_NAME["vertex"].endpoint(cfg.providers["p"]) == "https://aiplatform.googleapis.com"
    cfg = parse_config(_config('{kind: openai, endpoint: "https://llm.internal/v1"}'))
    assert BY_NAME["openai"].endpoint(cfg.providers["p"]) == "https://llm.internal/v1"
