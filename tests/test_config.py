"""Config validation: every error names the key path and says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from multihome.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent

BASE = """
server: {api_keys_env: [K]}
providers:
  az: {kind: azure, endpoint: "https://x.openai.azure.com"}
deployments:
  d1: {provider: az, model: gpt-4o-prod}
model_groups:
  gpt-4o: {deployments: [d1]}
"""


def test_example_config_is_valid():
    config = load_config(ROOT / "examples/gateway.yaml")
    assert config.model_groups["gpt-4o"].deployments == ["gpt-4o@azure", "gpt-4o@openai"]
    assert config.providers["openai"].auth.api_key_env == "OPENAI_API_KEY"


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("kind: azure", "kind: bedrockish", "providers.az.kind: Invalid enum value 'bedrockish'"),
        ('endpoint: "https://x.openai.azure.com"', 'endpoint: "x.openai.azure.com"', "providers.az.endpoint: must start with http"),
        ("model: gpt-4o-prod}", "model: gpt-4o-prod, context_window: big}", "deployments.d1.context_window: Expected `int | null`, got `str`"),
        ("model: gpt-4o-prod}", "model: gpt-4o-prod, colour: red}", "deployments.d1: Object contains unknown field `colour`"),
        ("provider: az,", "provider: nope,", "deployments.d1.provider: unknown provider 'nope' (known: az)"),
        ("deployments: [d1]", "deployments: [d1, d2]", "model_groups.gpt-4o.deployments[1]: unknown deployment 'd2'"),
        ("deployments: [d1]", "deployments: []", "model_groups.gpt-4o.deployments: list at least one deployment"),
        ("deployments: [d1]", "deployments: [d1], fail_over_on: [sometimes]", "model_groups.gpt-4o.fail_over_on[0]: unknown decline 'sometimes'"),
        ("model: gpt-4o-prod}", "model: gpt-4o-prod, capabilities: [telepathy]}", "deployments.d1.capabilities[0]: unknown capability 'telepathy'"),
        ("server: {api_keys_env: [K]}", "server: {}", "server.api_keys_env: name at least one environment variable"),
        ("server: {api_keys_env: [K]}", "server: {api_keys_env: [K], max_header_bytes: 100}", "server.max_header_bytes: at least 1024"),
        ("server: {api_keys_env: [K]}", "server: {api_keys_env: [K]}\nroutes: {}", "routes: unknown top-level key"),
        ("deployments: [d1]}", "deployments: [d1], strategy: cheapest}", "model_groups.gpt-4o.strategy: Invalid enum value 'cheapest'"),
        ("deployments: [d1]}", "deployments: [d1], fallback_groups: [claude]}", "model_groups.gpt-4o.fallback_groups[0]: unknown model group 'claude'"),
    ],
)
def test_errors_name_the_path(old, new, message):
    assert old in BASE
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace(old, new))
    assert message in str(info.value)


def test_secrets_are_never_values_in_the_file():
    text = BASE.replace('endpoint: "https://x.openai.azure.com"}', 'endpoint: "https://x.openai.azure.com", auth: {api_key: sk-123}}')
    with pytest.raises(ConfigError, match=r"providers.az.auth: Object contains unknown field `api_key`"):
        parse_config(text)


def test_not_yaml_and_missing_sections():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("providers: [unclosed")
    with pytest.raises(ConfigError, match="deployments: required"):
        parse_config("providers: {}\nmodel_groups: {}")


def test_config_check_cli(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    out = subprocess.run([sys.executable, "-m", "multihome.cli", "config", "check", str(good)], capture_output=True, text=True)
    assert out.returncode == 0 and "gpt-4o: d1" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("[d1]", "[d9]"))
    out = subprocess.run([sys.executable, "-m", "multihome.cli", "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1 and "model_groups.gpt-4o.deployments[0]: unknown deployment 'd9'" in out.stderr
