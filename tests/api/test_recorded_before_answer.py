"""A call is recorded (its usage row spooled: metering/spool.py) before the client can have its answer:
before a unary body is handed to the server, before a stream's last event is. The real app in process
in front of an in-process simulator; the ASGI `send` plays the server and looks at the sink each time
a body goes out."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from admin_http import running
from builders import open_door, simulated, single
from multihome.simulators import SimulatorConfig, start_simulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Sink:
    def __init__(self) -> None:
        self.calls = []

    def record(self, call) -> None:
        self.calls.append(call)


@pytest.fixture
async def app():
    sim = await start_simulator(SimulatorConfig(kind="openai", name="recorded"))
    cfg = single(simulated("openai", sim.url), names=("sim", "d", "g"), group_fields={"retries": 0}, server=open_door())
    try:
        async with running(cfg) as gateway:
            sink = Sink()
            gateway.pipeline.accounting.sinks.append(sink)
            yield gateway, sink, sim.url
    finally:
        await sim.close()


CHAT = {"model": "g", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
MESSAGES = {"model": "g", "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}
RESPONSES = {"model": "g", "input": "hello", "store": False}


@pytest.mark.parametrize(
    "path, body, last",
    [
        ("/v1/chat/completions", CHAT, b'"choices"'),
        ("/v1/chat/completions", {**CHAT, "stream": True}, b"data: [DONE]"),
        ("/v1/messages", MESSAGES, b'"content"'),
        ("/v1/messages", {**MESSAGES, "stream": True}, b"event: message_stop"),
        ("/v1/responses", RESPONSES, b'"output"'),
        ("/v1/responses", {**RESPONSES, "stream": True}, b"event: response.completed"),
    ],
)
async def test_the_call_is_recorded_before_its_last_bytes_go_out(app, path, body, last):
    gateway, sink, sim = app
    if body.get("stream"):  # events a few ms apart: several sends, only the last one held
        async with httpx.AsyncClient() as http:
            (await http.post(f"{sim}/_sim/faults", json={"chunk_delay_ms": 5})).raise_for_status()
    seen: list[tuple[bytes, int]] = []  # (body sent, calls recorded at that moment)
    messages = [{"type": "http.request", "body": msgspec.json.encode(body), "more_body": False}]

    async def receive():
        if not messages:
            await asyncio.sleep(3600)
        return messages.pop()

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        elif message.get("body"):
            seen.append((message["body"], len(sink.calls)))

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b""}
    scope["headers"] = [(b"content-type", b"application/json")]
    await asyncio.wait_for(gateway(scope, receive, send), 30)
    final = [recorded for sent, recorded in seen if last in sent]
    assert final == [1], [(sent[-80:], recorded) for sent, recorded in seen]
    assert sink.calls[0].outcome == "ok" and sink.calls[0].usage is not None
    if body.get("stream"):
        assert len(seen) > 2 and seen[0][1] == 0, "a stream's first events are not held back"
