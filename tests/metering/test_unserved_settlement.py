"""A group that may be billed for more answers than it serves reserves each of them (docs/metering.md
"Unserved answers are reserved for"): the multiplied reservation, on the budget, the key's tokens and the
charged deployment's tokens, is settled to exactly what the call was charged, whether it was answered (unary
or streamed), declined by every deployment, or cancelled while its upstream worked (its prompt's estimate).
Nothing else stays reserved.
The real app in process in front of an in-process simulator over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from admin_http import running
from builders import config, deployment, group, open_door, price, simulated
from multihome.simulators import SimulatorConfig, start_simulator

from .test_usual_release import Answer, _receive, _scope, _until, prompt_estimate

pytestmark = pytest.mark.anyio
REFUSAL = ["capacity", "unavailable", "refusal"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def app():
    sim = await start_simulator(SimulatorConfig(kind="openai", name="unserved-settlement"))
    limits = {"requests_per_minute": 1000, "tokens_per_minute": 1_000_000}
    cfg = config(
        server=open_door(),
        metering={
            "budgets": [{"scope": "key", "id": "*", "amount": "100", "period": "day", "mode": "hard"}],
            "rate_limits": [
                {"scope": "key", "id": "*", **limits},
                {"scope": "deployment", "id": "a", **limits},
                {"scope": "deployment", "id": "b", **limits},
            ],
        },
        providers={"p": simulated("openai", sim.url)},
        deployments={"a": deployment("p", "m-a", price=price(3, 15)), "b": deployment("p", "m-b", price=price(3, 15))},
        model_groups={
            "hedged": group("a", "b", retries=0, hedge_after_ms=5000),
            "filtered": group("a", "b", retries=0, fail_over_on=REFUSAL),
        },
    )
    try:
        async with running(cfg) as gateway:
            yield gateway, sim.url
    finally:
        await sim.close()


def _held(limiter) -> tuple[int, int, int]:
    """(budget, the key's tokens, the deployments' tokens) counted now."""
    values = limiter.counters._v
    budget = sum(v for k, v in values.items() if k.startswith("mh:b:"))
    tokens = [(k, v) for k, v in values.items() if k.startswith("mh:r:") and k.split(":")[-2] == "t"]
    key = sum(v for k, v in tokens if k.startswith("mh:r:key:"))
    return budget, key, sum(v for k, v in tokens if k.startswith("mh:r:deployment:"))


def _usage_of(body: bytes, stream: bool) -> tuple[int, int]:
    if stream:
        events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: {")]
        usage = [u for u in (msgspec.json.decode(e).get("usage") for e in events) if u]
        return usage[-1]["prompt_tokens"], usage[-1]["completion_tokens"]
    usage = msgspec.json.decode(body)["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


async def _fault(sim: str, rule: dict | None) -> None:
    async with httpx.AsyncClient() as http:
        if rule is None:
            (await http.delete(f"{sim}/_sim/faults")).raise_for_status()
        else:
            (await http.post(f"{sim}/_sim/faults", json=rule)).raise_for_status()


@pytest.mark.parametrize("model", ["hedged", "filtered"])
async def test_the_multiplied_reservation_is_settled_to_what_was_charged(app, model):
    gateway, sim = app
    limiter = gateway.pipeline.accounting.limiter
    assert gateway.catalog.groups[model].answers == 2  # each call reserves two answers
    spent = tokens = 0
    plain = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
    for stream in (False, True):
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        answer = Answer()
        await asyncio.wait_for(gateway(_scope(), _receive(body), answer), 20)
        assert answer.status == 200, answer.body
        prompt, completion = _usage_of(answer.body, stream)
        spent += (prompt * 3_000_000 + completion * 15_000_000) // 1000  # $3 / $15 per 1M tokens
        tokens += prompt + completion
        await _until(lambda: not limiter.open, "a ticket stayed open")
        assert _held(limiter) == (spent, tokens, tokens), stream

    # Declined by both deployments: nothing charged, nothing left reserved.
    await _fault(sim, {"status": 503})
    answer = Answer()
    await asyncio.wait_for(gateway(_scope(), _receive(plain), answer), 20)
    assert answer.status == 503, answer.body
    await _until(lambda: not limiter.open, "a declined call's ticket stayed open")
    assert _held(limiter) == (spent, tokens, tokens)

    # Cancelled while its upstream works (the client left): given back but for the prompt's estimate, which the
    # upstream sent the request bills (docs/metering.md), on the budget, the key's and that deployment's tokens.
    await _fault(sim, None)
    await _fault(sim, {"latency_ms": 30_000})
    call = asyncio.ensure_future(gateway(_scope(), _receive(plain), Answer()))
    await _until(lambda: len(limiter.open) == 1, "the call was never admitted")
    assert _held(limiter)[0] > spent
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not limiter.open
    prompt = prompt_estimate(plain)
    assert _held(limiter) == (spent + prompt * 3_000_000 // 1000, tokens + prompt, tokens + prompt)
