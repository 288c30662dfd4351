"""The usual shape's admission and its in-place settlement on the real request path (the app in process,
in front of an in-process simulator over real HTTP): a call in flight holds its reservation, so a second
call that would pass the hard budget is refused (429, counting nothing and leaving no ticket); the first
call, cancelled while its upstream works (the client went away), gives back everything but its request and
its prompt's estimate (the upstream read the prompt, and bills it);
and a call that is answered is charged what it cost, no more."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from admin_http import running
from builders import config, deployment, group, open_door, price, simulated
from multihome.schema import estimate
from multihome.schema.chat import parse_chat
from multihome.simulators import SimulatorConfig, start_simulator

pytestmark = pytest.mark.anyio
CHAT = {"model": "g", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
# What one CHAT call reserves at this price (its prompt's estimate with the default margin, and 20 output
# tokens): the budget holds one call in flight, not two.
RESERVE_NANOS = 369_000
BUDGET = "0.0006"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def app():
    sim = await start_simulator(SimulatorConfig(kind="openai", name="usual"))
    cfg = config(
        server=open_door(),
        metering={
            "budgets": [{"scope": "key", "id": "*", "amount": BUDGET, "period": "day", "mode": "hard"}],
            "rate_limits": [{"scope": "key", "id": "*", "requests_per_minute": 1000, "tokens_per_minute": 1_000_000}],
        },
        providers={"p": simulated("openai", sim.url)},
        deployments={"d": deployment("p", "m", price=price(3, 15))},
        model_groups={"g": group("d", retries=0)},
    )
    try:
        async with running(cfg) as gateway:
            yield gateway, sim.url
    finally:
        await sim.close()


def prompt_estimate(body: dict) -> int:
    """The gateway's estimate of the prompt tokens of a chat body (schema/estimate.py)."""
    return estimate.input_tokens(parse_chat(msgspec.json.encode(body)).request)


def _scope() -> dict:
    path = "/v1/chat/completions"
    headers = [(b"content-type", b"application/json")]
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }


def _receive(body: dict = CHAT):
    messages = [{"type": "http.request", "body": msgspec.json.encode(body), "more_body": False}]

    async def receive():
        if not messages:
            await asyncio.sleep(3600)  # the client says nothing more until its request is cancelled
        return messages.pop()

    return receive


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list = []
        self.body = b""

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], message["headers"]
        else:
            self.body += message.get("body", b"")


def _counters(limiter) -> tuple[int, int, int]:
    """(budget, requests, tokens) counters of the one caller, 0 where absent."""
    values = limiter.counters._v
    budget = sum(v for k, v in values.items() if k.startswith("mh:b:"))
    # rate counters are mh:r:<scope>:<owner>:<r|t>:<minute> (owner: the id, or tenant:id for a team or key)
    requests = sum(v for k, v in values.items() if k.startswith("mh:r:") and k.split(":")[-2] == "r")
    tokens = sum(v for k, v in values.items() if k.startswith("mh:r:") and k.split(":")[-2] == "t")
    return budget, requests, tokens


async def _until(condition, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_cancelled_call_gives_its_reservation_back_and_a_refused_one_counts_nothing(app):
    gateway, sim = app
    limiter = gateway.pipeline.accounting.limiter
    async with httpx.AsyncClient() as http:
        (await http.post(f"{sim}/_sim/faults", json={"latency_ms": 30_000})).raise_for_status()
    first = asyncio.ensure_future(gateway(_scope(), _receive(), Answer()))
    await _until(lambda: len(limiter.open) == 1, "the first call was never admitted")
    (shape,) = limiter._shapes.values()
    assert shape.usual is not None  # the usual shape's own admission, not the general path
    budget, requests, tokens = _counters(limiter)
    assert budget == RESERVE_NANOS and requests == 1 and tokens > 0

    refused = Answer()
    await asyncio.wait_for(gateway(_scope(), _receive(), refused), 20)
    assert refused.status == 429, refused.body
    assert msgspec.json.decode(refused.body)["error"]["code"] == "budget_exceeded"
    assert _counters(limiter) == (budget, requests, tokens) and len(limiter.open) == 1

    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not limiter.open
    # A request, once counted, stays counted; and its upstream, sent the request, bills the prompt: its estimate
    # is charged (docs/metering.md, "A request an upstream was sent and never answered").
    prompt = prompt_estimate(CHAT)
    assert _counters(limiter) == (prompt * 3_000_000 // 1000, 1, prompt)


async def test_an_answered_call_is_charged_what_it_cost(app):
    gateway, _ = app
    limiter = gateway.pipeline.accounting.limiter
    answer = Answer()
    await asyncio.wait_for(gateway(_scope(), _receive(), answer), 20)
    assert answer.status == 200, answer.body
    usage = msgspec.json.decode(answer.body)["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cost_nanos = (prompt * 3_000_000 + completion * 15_000_000) // 1000  # $3 / $15 per 1M tokens
    assert not limiter.open
    assert _counters(limiter) == (cost_nanos, 1, prompt + completion)
    headers = dict(answer.headers)
    assert headers[b"x-ratelimit-limit-requests"] == b"1000" and headers[b"x-ratelimit-remaining-requests"] == b"999"
