"""A call that fails over is admitted on the rate limits of the deployment it fails over to before that
deployment is called (docs/metering.md "Deployment limits"): one at its own requests-per-minute limit is
passed over, as admission passes over a first deployment at its limit; the walk goes on to the next. When
none is left, a deployment that failed is the answer (as if the one at its limit did not exist); the
limiter's 429 (OpenAI's envelope, Retry-After) only when every candidate was at its limit. In process and with
Redis counters, unary and streamed; the real app in process in front of a simulator over real HTTP, which
says which deployments were called."""

from __future__ import annotations

import uuid

import pytest

from builders import config, deployment, group, open_door, simulated
from multihome.simulators import SimulatorConfig, start_simulator
from stored_app import served

from .conftest import requests_this_minute, tokens_this_minute

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("same_minute")]

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(params=["local", "redis"])
def counters(request, monkeypatch) -> dict:
    """The `metering:` fields of in-process or Redis counters (a fresh key prefix each test)."""
    if request.param == "local":
        return {}
    monkeypatch.setenv("MH_TEST_FAILOVER_REDIS", request.getfixturevalue("redis_server").url)
    return {"redis_url_env": "MH_TEST_FAILOVER_REDIS", "key_prefix": f"f{uuid.uuid4().hex[:8]}:"}


@pytest.fixture
async def sim():
    s = await start_simulator(SimulatorConfig(kind="openai", name="failover-admission"))
    try:
        yield s
    finally:
        await s.close()


def _config(sim_url: str, counters: dict, **limits: int) -> dict:
    """Deployments a, b, c of models m-a, m-b, m-c on one simulator, with these per-minute limits
    (`b_rpm`: b's requests, `b_tpm`: b's tokens, `a_rpm`...)."""
    rules: dict[str, dict] = {}
    for name, value in limits.items():
        dep, kind = name.split("_")
        field = "requests_per_minute" if kind == "rpm" else "tokens_per_minute"
        rules.setdefault(dep, {"scope": "deployment", "id": dep})[field] = value
    return config(
        server=open_door(),
        metering={"rate_limits": list(rules.values()), **counters},
        providers={"sim": simulated("openai", sim_url)},
        deployments={
            **{name: deployment("sim", f"m-{name}") for name in ("a", "b", "c")},
            "x": deployment("sim", "m-x", capabilities=["chat", "streaming"]),  # no tools
        },
        model_groups={
            "only-b": group("b", retries=0),
            "abc": group("a", "b", "c", retries=0),
            "ab": group("a", "b", retries=0),
            "hedged": group("a", "b", retries=0, hedge_after_ms=50),
            "retried": group("a", "c", retries=2, backoff_ms=1),
            "x-then-b": group("x", retries=0, fallback_groups=["only-b"]),
            "a-then-b": group("a", retries=0, fallback_groups=["only-b"]),
        },
    )


class _Sink:
    def __init__(self) -> None:
        self.calls: list = []

    def record(self, call) -> None:
        self.calls.append(call)


def _called(sim, model: str) -> int:
    return sum(1 for r in sim.state.requests() if r["model"] == model)


async def _chat(client, model: str, stream: bool):
    body = {"model": model, "messages": USER, "stream": stream}
    resp = await client.post("/v1/chat/completions", json=body)
    await resp.aread()
    return resp


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_a_failover_to_a_deployment_at_its_limit_skips_it(sim, counters, stream):
    sim.state.set_fault({"status": 503, "match": "m-a"})
    async with served(_config(sim.url, counters, b_rpm=1)) as (client, _, app):
        records = _Sink()
        app.pipeline.accounting.sinks.append(records)
        first = await _chat(client, "only-b", stream)  # b's one call of this minute
        assert first.status_code == 200, first.text
        assert _called(sim, "m-b") == 1

        # a fails (503); b is at its limit: not called; c serves.
        resp = await _chat(client, "abc", stream)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-multihome-deployment"] == "c"
        attempts = resp.headers["x-multihome-attempts"]
        assert attempts.startswith("a;outcome=http_503")
        assert 'b;outcome=skipped;reason="deployment rate limit reached"' in attempts
        assert _called(sim, "m-b") == 1, "the gateway called a deployment at its own rate limit"
        assert _called(sim, "m-c") == 1

        # a fails and b, the only one left, is at its limit: b is still not called, and the client hears a's
        # failure (a 503 it may retry), not a 429 telling it to back off for a limit (docs/routing.md).
        refused = await _chat(client, "ab", stream)
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "all_deployments_failed")
        assert "a: http_503" in error["message"]
        assert _called(sim, "m-b") == 1
        assert _called(sim, "m-a") == 2
        record = records.calls[-1]
        assert (record.status, record.outcome, record.error_code) == (503, "declined", "all_deployments_failed")


@pytest.mark.parametrize("group", ["ab", "a-then-b"], ids=["same-group", "fallback-group"])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_an_upstream_throttle_beside_a_deployment_at_its_limit_is_the_throttle(sim, counters, stream, group):
    """a answers 429 (the provider's quota); b, in a's group or in its fallback group, is at its own limit: as
    if b did not exist, the client gets what a's 429 alone gives (429 all_deployments_throttled, a's
    Retry-After), not the 503 of a walk that called nothing more."""
    sim.state.set_fault({"throttle": 7, "match": "m-a"})
    async with served(_config(sim.url, counters, b_rpm=1)) as (client, _, _):
        assert (await _chat(client, "only-b", stream)).status_code == 200  # b's one call of this minute
        refused = await _chat(client, group, stream)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "all_deployments_throttled"
        assert refused.headers["retry-after"] == "7"
        assert _called(sim, "m-b") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_every_candidate_at_its_limit_is_the_limiter_s_429(sim, counters, stream):
    """No deployment failed: x cannot take tools, so the call falls back to b, at its own limit. Only then is
    the answer the limiter's 429 (OpenAI's envelope, Retry-After at the minute's end)."""
    async with served(_config(sim.url, counters, b_rpm=1)) as (client, _, app):
        records = _Sink()
        app.pipeline.accounting.sinks.append(records)
        assert (await _chat(client, "only-b", stream)).status_code == 200  # b's one call of this minute
        body = {"model": "x-then-b", "messages": USER, "stream": stream, "tools": [_TOOL]}
        refused = await client.post("/v1/chat/completions", json=body)
        await refused.aread()
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert "deployment b" in error["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert int(refused.headers["retry-after-ms"]) <= 60_000
        assert _called(sim, "m-b") == 1 and _called(sim, "m-x") == 0
        assert records.calls[-1].status == 429


_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_a_failover_to_a_deployment_with_room_counts_its_call_once(sim, counters, stream):
    """The failover's own admission counts b's request when b is called; the call's record does not count it
    again, and the next failover finds b at its limit."""
    sim.state.set_fault({"status": 503, "match": "m-a"})
    async with served(_config(sim.url, counters, b_rpm=2)) as (client, _, app):
        for served_by in ("b", "b", "c"):
            resp = await _chat(client, "abc", stream)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-multihome-deployment"] == served_by
        limiter = app.pipeline.accounting.limiter
        await limiter.drain()
        assert await requests_this_minute(limiter, "deployment", "b") == 2
        assert _called(sim, "m-b") == 2


async def test_a_failover_past_a_deployment_s_tokens_limit_skips_it(sim, counters):
    """The failover's own admission reserves the call's tokens on b's tokens-per-minute limit: a call whose
    worst case does not fit is not sent there."""
    sim.state.set_fault({"status": 503, "match": "m-a"})
    async with served(_config(sim.url, counters, b_tpm=100)) as (client, _, _):
        resp = await _chat(client, "abc", False)  # reserves the prompt and 4096 output tokens: more than 100
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-multihome-deployment"] == "c"
        refused = await _chat(client, "ab", False)  # a fails, b's tokens do not fit: a's failure answers
        assert refused.status_code == 503, refused.text
        assert "b: skipped (deployment rate limit reached)" in refused.json()["error"]["message"]
        assert _called(sim, "m-b") == 0


@pytest.mark.parametrize("b_fails", [False, True], ids=["b-serves", "b-fails"])
async def test_a_failover_s_tokens_reservation_is_settled(sim, counters, b_fails):
    """What the failover's admission reserved on b is given back when the call is recorded: b's tokens
    counter holds the tokens b served (none if it failed too), its requests counter the one call made."""
    sim.state.set_fault({"status": 503, "match": "m-a"})
    if b_fails:
        sim.state.set_fault({"status": 503, "match": "m-b"})
    async with served(_config(sim.url, counters, b_rpm=10, b_tpm=1_000_000)) as (client, _, app):
        resp = await _chat(client, "abc", False)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-multihome-deployment"] == ("c" if b_fails else "b")
        usage = resp.json()["usage"]
        limiter = app.pipeline.accounting.limiter
        await limiter.drain()
        assert await requests_this_minute(limiter, "deployment", "b") == 1
        served_tokens = 0 if b_fails else usage["prompt_tokens"] + usage["completion_tokens"]
        assert await tokens_this_minute(limiter, "deployment", "b") == served_tokens


async def test_a_hedge_s_partner_at_its_limit_is_not_called(sim, counters):
    """A slow first deployment is raced against the next only if the next has room under its own limit."""
    sim.state.set_fault({"latency_ms": 400, "match": "m-a"})
    async with served(_config(sim.url, counters, b_rpm=1)) as (client, _, _):
        assert (await _chat(client, "only-b", False)).status_code == 200  # b's one call of this minute
        resp = await _chat(client, "hedged", False)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-multihome-deployment"] == "a"
        assert 'b;outcome=skipped;reason="deployment rate limit reached"' in resp.headers["x-multihome-attempts"]
        assert _called(sim, "m-b") == 1


async def test_a_retry_on_a_deployment_at_its_limit_is_not_made(sim, counters):
    """A retry is another upstream call to its deployment: at the deployment's requests limit the walk
    fails over instead."""
    sim.state.set_fault({"status": 503, "match": "m-a"})
    async with served(_config(sim.url, counters, a_rpm=2)) as (client, _, app):
        resp = await _chat(client, "retried", False)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-multihome-deployment"] == "c"
        attempts = resp.headers["x-multihome-attempts"]
        assert attempts.count("a;outcome=http_503") == 2
        assert 'a;outcome=skipped;reason="deployment rate limit reached"' in attempts
        assert _called(sim, "m-a") == 2, "the gateway retried a deployment at its own rate limit"
        limiter = app.pipeline.accounting.limiter
        await limiter.drain()
        assert await requests_this_minute(limiter, "deployment", "a") == 2
