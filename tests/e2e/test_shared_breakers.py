"""Two gateway processes sharing one real Redis see the same breaker state."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from builders import api_keys, breakers, config, deployment, group, simulated

from .conftest import CLIENT_KEY
from .processes import Gateway, started_together
from .services import RedisServer

USER = [{"role": "user", "content": "hello"}]
# An open breaker's cooldown: the calls a test makes while it is open fit in it on a busy machine too.
COOLDOWN_S = 10.0


def _config(a: str, b: str) -> dict:
    """Breakers kept in Redis, shared by every replica."""
    return config(
        server=api_keys("MH_TEST_CLIENT_KEY"),
        routing={"redis_url_env": "MH_TEST_REDIS_URL", **breakers(3, cooldown_s=COOLDOWN_S)},
        providers={"pa": simulated("openai", a), "pb": simulated("openai", b)},
        deployments={"primary": deployment("pa", "primary"), "secondary": deployment("pb", "secondary")},
        model_groups={"g": group("primary", "secondary", retries=0)},
    )


@pytest.fixture
def pair(tmp_path, simulator):
    redis = RedisServer()
    a, b = simulator("openai", "sim-a"), simulator("openai", "sim-b")
    env = {"MH_TEST_CLIENT_KEY": CLIENT_KEY, "MH_TEST_REDIS_URL": redis.url}
    cfg = _config(a.url, b.url)
    gateways = started_together(Gateway(cfg, tmp_path, env, wait=False), Gateway(cfg, tmp_path, env, wait=False))
    clients = [openai.OpenAI(base_url=g.url + "/v1", api_key=CLIENT_KEY, max_retries=0) for g in gateways]
    yield a, b, clients, gateways
    for g in gateways:
        g.stop()
    redis.stop()


def _served(client) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(model="g", messages=USER)
    return raw.headers["x-multihome-deployment"], raw.headers["x-multihome-attempts"]


def _breaker(gateway) -> str:
    explain = httpx.post(
        gateway.url + "/v1/route/explain",
        json={"model": "g", "messages": USER},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    ).json()
    return explain["breakers"].get("primary", {}).get("state", "closed")


def _wait(predicate, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_failures_on_both_replicas_open_one_shared_breaker_and_a_probe_closes_it(pair):
    a, b, (one, two), gateways = pair
    a.fault(status=503, match="primary")
    # Failures are counted across replicas: 2 on one + 1 on two reach the threshold of 3.
    assert _served(one)[0] == "secondary"
    assert _served(one)[0] == "secondary"
    assert _served(two)[0] == "secondary"
    assert a.stats()["requests"] == 3
    # Both replicas now skip the primary without calling it.
    assert _wait(lambda: all(_breaker(g) == "open" for g in gateways))
    for client in (one, two):
        deployment, attempts = _served(client)
        assert deployment == "secondary" and attempts.startswith('primary;outcome=skipped;reason="breaker open')
    assert a.stats()["requests"] == 3
    # After the cooldown only one replica probes; the probe succeeds and both close.
    a.clear_faults()
    time.sleep(COOLDOWN_S + 0.1)
    assert _served(two)[0] == "primary"  # the probe
    assert _wait(lambda: all(_breaker(g) == "closed" for g in gateways))
    assert _served(one)[0] == "primary"
    assert a.stats()["requests"] == 3 + 2
