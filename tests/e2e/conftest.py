"""One set of simulated clouds and one gateway process shared by the end-to-end tests."""

from __future__ import annotations

import openai
import pytest

from builders import api_keys, breakers, config, deployment, embedding, group, simulated

from .processes import Gateway, Simulator, Simulators

CLIENT_KEY = "mh-test-client-key"
SECRETS = {
    "MH_TEST_CLIENT_KEY": CLIENT_KEY,
    "MH_TEST_AZURE_KEY": "azure-secret-key-123",
    "MH_TEST_OPENAI_KEY": "openai-secret-key-456",
}

# What the shared gateway's failover groups wait for: a short first byte, so a stalled upstream fails over fast.
QUICK = {"first_byte_s": 1.0, "total_s": 5}


def shared_config(sims: dict[str, Simulator]) -> dict:
    """The shared gateway's config, in front of `sims` (a test may add to it for a gateway of its own)."""
    urls = {name: sim.url for name, sim in sims.items()}
    azure = simulated("azure", urls["azure"], key_env="MH_TEST_AZURE_KEY")
    return config(
        server=api_keys("MH_TEST_CLIENT_KEY", max_body_bytes=65536),
        routing=breakers(0),  # tests share this gateway; breakers get their own in test_routing.py
        providers={
            "azure": {**azure, "region": "eastus", "data_zone": "US"},
            "azure-v1": {**azure, "api_version": "v1"},
            "openai": simulated("openai", urls["openai"], key_env="MH_TEST_OPENAI_KEY"),
            "selfhosted": simulated("openai", urls["selfhosted"]),
        },
        deployments={
            "az-main": deployment("azure", "gpt-4o-main"),
            "oa-main": deployment("openai", "gpt-4o-main-oa"),
            "az-strict": deployment("azure", "gpt-4o-strict"),
            "oa-strict": deployment("openai", "gpt-4o-strict-oa"),
            "oa-solo": deployment("openai", "solo"),
            "sh-text": deployment("selfhosted", "llama-text", capabilities=["chat", "streaming", "tools"]),
            "oa-vision": deployment("openai", "gpt-4o-vision"),
            "az-v1": deployment("azure-v1", "gpt-4o-v1dep"),
            "az-embed": embedding("azure", "embed-az"),
            "oa-embed": embedding("openai", "embed-oa"),
        },
        model_groups={
            "gpt-4o": group("az-main", "oa-main", retries=1, backoff_ms=10, max_retry_after_s=1.5, timeouts=QUICK),
            "gpt-4o-strict": group(
                "az-strict", "oa-strict", fail_over_on=["capacity", "unavailable", "refusal"], retries=0
            ),
            "solo": group("oa-solo", retries=0, timeouts=QUICK),
            "mixed": group("sh-text", "oa-vision"),
            "gpt-4o-v1": group("az-v1"),
            "text-embedding-3-small": group("az-embed", "oa-embed", retries=0),
        },
    )


@pytest.fixture(scope="session")
def sims():
    with Simulators() as started:
        yield {
            "azure": started.start("azure", "azure-eastus", key_env="MH_TEST_AZURE_KEY", env=SECRETS),
            "openai": started.start("openai", "openai", key_env="MH_TEST_OPENAI_KEY", env=SECRETS),
            "selfhosted": started.start("openai", "selfhosted"),
        }


@pytest.fixture(scope="session")
def gateway(sims, tmp_path_factory):
    gw = Gateway(shared_config(sims), tmp_path_factory.mktemp("gw"), SECRETS)
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
