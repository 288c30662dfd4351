"""Active health probes: an open breaker is probed in the background, so the deployment is back
as soon as it answers, long before its cooldown, and no client call is spent as the probe."""

from __future__ import annotations

import time

import httpx
import openai

from builders import api_keys, breakers, config, deployment, embedding, group, simulated

from .conftest import CLIENT_KEY
from .helpers import until
from .processes import Gateway

USER = [{"role": "user", "content": "hello"}]


def _config(a: str, b: str) -> dict:
    """Breakers that stay open for ten minutes unless a health probe closes them."""
    return config(
        server=api_keys("MH_TEST_CLIENT_KEY"),
        routing={**breakers(2, cooldown_s=600), "health_probe": {"interval_s": 0.2, "timeout_s": 2}},
        providers={"pa": simulated("openai", a), "pb": simulated("openai", b)},
        deployments={
            "primary": deployment("pa", "primary-model"),
            "backup": deployment("pb", "backup-model"),
            "vectors": embedding("pa", "vector-model"),
        },
        model_groups={"chat": group("primary", "backup", retries=0), "embed": group("vectors", retries=0)},
    )


def breaker(gw: Gateway, body: dict, name: str) -> str:
    explain = httpx.post(gw.url + "/v1/route/explain", json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    return explain.json()["breakers"].get(name, {}).get("state", "closed")


def wait_state(gw: Gateway, body: dict, name: str, want: str, seconds: float = 60.0) -> float:
    start = time.monotonic()
    while breaker(gw, body, name) != want:
        assert time.monotonic() - start < seconds, f"{name} breaker never became {want}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_open_breakers_are_probed_back_without_spending_client_calls(tmp_path, simulator):
    a, b = simulator("openai", "sim-a"), simulator("openai", "sim-b")
    gw = Gateway(_config(a.url, b.url), tmp_path, {"MH_TEST_CLIENT_KEY": CLIENT_KEY})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    chat = {"model": "chat", "messages": USER}
    try:
        a.fault(status=503, match="primary-model")
        for _ in range(2):
            assert (
                client.chat.completions.with_raw_response.create(model="chat", messages=USER).headers[
                    "x-multihome-deployment"
                ]
                == "backup"
            )
        assert breaker(gw, chat, "primary") == "open"
        # Still failing: probes keep it open, and clients go straight to the backup.
        until(lambda: len([r for r in a.requests() if r.get("model") == "primary-model"]) >= 4, what="two probes")
        assert breaker(gw, chat, "primary") == "open"  # 2 client calls, then probes every 0.2 s, all failed
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=USER)
        assert (
            raw.headers["x-multihome-deployment"] == "backup"
            and "primary;outcome=skipped" in raw.headers["x-multihome-attempts"]
        )

        # The primary recovers: a probe closes the breaker within about one interval, not 600 s.
        a.clear_faults()
        recovered_in = wait_state(gw, chat, "primary", "closed")
        assert recovered_in < 60  # by a probe, far before the 600 s cooldown
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=USER)
        assert raw.headers["x-multihome-attempts"].split(";")[0] == "primary"
        assert "outcome=ok" in raw.headers["x-multihome-attempts"] and "," not in raw.headers["x-multihome-attempts"]

        # An embeddings-only deployment is probed with an embedding, and closed the same way.
        a.fault(status=503, match="vector-model")
        for _ in range(2):
            try:
                client.embeddings.create(model="embed", input="x")
            except openai.APIStatusError:
                pass
        embed = {"model": "embed", "input": "x"}
        assert breaker(gw, embed, "vectors") == "open"
        a.clear_faults()
        wait_state(gw, embed, "vectors", "closed")
        assert client.embeddings.create(model="embed", input="x").data
        embeddings = [r for r in a.requests() if r.get("model") == "vector-model"]
        assert all(r["path"].endswith("/embeddings") for r in embeddings)
        assert len(embeddings) >= 4  # 2 client calls, at least one probe, the last call
    finally:
        gw.stop()
