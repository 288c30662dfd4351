"""One set of simulated clouds and one gateway process shared by the end-to-end tests."""

from __future__ import annotations

import openai
import pytest

from .processes import Gateway, Simulator, Simulators

CLIENT_KEY = "mh-test-client-key"
SECRETS = {
    "MH_TEST_CLIENT_KEY": CLIENT_KEY,
    "MH_TEST_AZURE_KEY": "azure-secret-key-123",
    "MH_TEST_OPENAI_KEY": "openai-secret-key-456",
}

CONFIG = """
server:
  api_keys_env: [MH_TEST_CLIENT_KEY]
  max_body_bytes: 65536
routing:
  breaker: {{consecutive_failures: 0}}  # tests share this gateway; breakers get their own in test_routing.py
providers:
  azure:
    kind: azure
    endpoint: {azure}
    region: eastus
    data_zone: US
    auth: {{api_key_env: MH_TEST_AZURE_KEY}}
  azure-v1:
    kind: azure
    endpoint: {azure}
    api_version: v1
    auth: {{api_key_env: MH_TEST_AZURE_KEY}}
  openai:
    kind: openai
    endpoint: {openai}/v1
    auth: {{api_key_env: MH_TEST_OPENAI_KEY}}
  selfhosted:
    kind: openai
    endpoint: {selfhosted}/v1
deployments:
  az-main: {{provider: azure, model: gpt-4o-main}}
  oa-main: {{provider: openai, model: gpt-4o-main-oa}}
  az-strict: {{provider: azure, model: gpt-4o-strict}}
  oa-strict: {{provider: openai, model: gpt-4o-strict-oa}}
  oa-solo: {{provider: openai, model: solo}}
  sh-text: {{provider: selfhosted, model: llama-text, capabilities: [chat, streaming, tools]}}
  oa-vision: {{provider: openai, model: gpt-4o-vision}}
  az-v1: {{provider: azure-v1, model: gpt-4o-v1dep}}
  az-embed: {{provider: azure, model: embed-az, capabilities: [embeddings]}}
  oa-embed: {{provider: openai, model: embed-oa, capabilities: [embeddings]}}
model_groups:
  gpt-4o:
    deployments: [az-main, oa-main]
    retries: 1
    backoff_ms: 10
    max_retry_after_s: 1.5
    timeouts: {{first_byte_s: 1.0, total_s: 5}}
  gpt-4o-strict:
    deployments: [az-strict, oa-strict]
    fail_over_on: [capacity, unavailable, refusal]
    retries: 0
  solo:
    deployments: [oa-solo]
    retries: 0
    timeouts: {{first_byte_s: 1.0, total_s: 5}}
  mixed:
    deployments: [sh-text, oa-vision]
  gpt-4o-v1:
    deployments: [az-v1]
  text-embedding-3-small:
    deployments: [az-embed, oa-embed]
    retries: 0
"""


@pytest.fixture(scope="session")
def sims():
    started = {
        "azure": Simulator("azure", "azure-eastus", "--api-key-env", "MH_TEST_AZURE_KEY", env=SECRETS),
        "openai": Simulator("openai", "openai", "--api-key-env", "MH_TEST_OPENAI_KEY", env=SECRETS),
        "selfhosted": Simulator("openai", "selfhosted"),
    }
    yield started
    for sim in started.values():
        sim.stop()


@pytest.fixture(scope="session")
def gateway(sims, tmp_path_factory):
    text = CONFIG.format(**{name: sim.url for name, sim in sims.items()})
    gw = Gateway(text, tmp_path_factory.mktemp("gw"), SECRETS)
    yield gw
    log = gw.stop()
    for secret in SECRETS.values():
        assert secret not in log, "a secret reached the gateway's log"


@pytest.fixture(autouse=True)
def _clean_sims(request):
    if "sims" in request.fixturenames:
        for sim in request.getfixturevalue("sims").values():
            sim.reset()


@pytest.fixture
def simulator():
    """Start simulators for one test: `simulator("azure", "az", key_env="K", env=SECRETS)` (see
    `Simulators.start`); each is stopped when the test ends, however it ends."""
    with Simulators() as started:
        yield started.start


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
