"""A call an upstream has answered is charged even when the drain deadline ends it before its answer goes
out (here: while it waits for its `call_started` to be fsynced on the audit trail, as every answer does
under `sync: answer`). Before the fix the drain recorded it as a call nobody answered: no usage on its
record, and its budget reservation given back in full, though the upstream had produced (and billed) it.

The real app in process, in front of an in-process simulator over real HTTP, with a real audit trail
whose fsync thread gathers writes for four seconds (`commit_delay_ms`), so the answered call is still
waiting when the drain's deadline passes."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from admin_http import running
from builders import audit, config, deployment, group, open_door, price, simulated
from multihome.api.drain import Drain
from multihome.simulators import SimulatorConfig, start_simulator

pytestmark = pytest.mark.anyio
CHAT = {"model": "g", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Sink:
    """A second call sink: what the call's record says."""

    def __init__(self) -> None:
        self.calls: list = []

    def record(self, call) -> None:
        self.calls.append(call)


@pytest.fixture
async def app(tmp_path):
    sim = await start_simulator(SimulatorConfig(kind="openai", name="drained"))
    cfg = config(
        server=open_door(),
        audit=audit(tmp_path / "audit", sync="answer", commit_delay_ms=4000),
        metering={"budgets": [{"scope": "key", "id": "*", "amount": "10", "period": "day", "mode": "hard"}]},
        providers={"p": simulated("openai", sim.url)},
        deployments={"d": deployment("p", "m", price=price(3, 15))},
        model_groups={"g": group("d", retries=0)},
    )
    try:
        async with running(cfg) as gateway:
            yield gateway
    finally:
        await sim.close()


async def test_an_answered_call_ended_by_the_drain_deadline_is_charged(app):
    gateway = app
    sink = Sink()
    gateway.pipeline.accounting.sinks.append(sink)
    limiter = gateway.pipeline.accounting.limiter
    drain = gateway.drain = Drain(0.05)
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": msgspec.json.encode(CHAT), "more_body": False}]

    async def receive():
        if not messages:
            await asyncio.Event().wait()  # the client says nothing more
        return messages.pop()

    async def send(message) -> None:
        sent.append(message)

    path = "/v1/chat/completions"
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b""}
    scope["headers"] = [(b"content-type", b"application/json")]
    task = asyncio.ensure_future(gateway(scope, receive, send))
    deadline = asyncio.get_running_loop().time() + 20
    while not any(c.tracker is not None and c.tracker.served is not None for c in drain._calls.values()):
        assert asyncio.get_running_loop().time() < deadline, "the upstream never answered"
        await asyncio.sleep(0.005)
    (tracker,) = [c.tracker for c in drain._calls.values()]
    assert not tracker.finished  # answered, and waiting for its start to be durable
    drain.begin()
    await asyncio.wait_for(task, 20)
    assert sent[0]["status"] == 503  # the drain's answer: the client did not get the upstream's
    [call] = sink.calls
    assert call.deployment == "d" and call.usage is not None and call.usage.completion_tokens > 0, call
    assert (call.status, call.outcome, call.error_code) == (503, "cancelled", "gateway_shutting_down")
    usage = call.usage
    cost_nanos = (usage.prompt_tokens * 3_000_000 + usage.completion_tokens * 15_000_000) // 1000
    budget = sum(v for k, v in limiter.counters._v.items() if k.startswith("mh:b:"))
    assert budget == cost_nanos and not limiter.open
