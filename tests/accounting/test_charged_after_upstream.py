"""A call an upstream answered is recorded and charged whatever happens to the answer afterwards
(issue 11, finding 1): the server refusing the response head, the request task being cancelled
while the answer is being sent. And it is recorded (its usage row spooled: metering/spool.py)
before the client can have its answer: before a unary body is handed to the server, before a
stream's last event is.

The real app in process, in front of an in-process simulator over real HTTP; the ASGI `send` plays
the server's part. uvicorn raises `RuntimeError("Invalid HTTP header value.")` from the response
start when a header holds a control character; before the fix such a call's record had no usage,
and a cancelled call had no record at all.
"""

from __future__ import annotations

import asyncio
import hashlib

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
    sim = await start_simulator(SimulatorConfig(kind="openai", name="charged"))
    cfg = single(simulated("openai", sim.url), names=("sim", "d", "g"), group_fields={"retries": 0}, server=open_door())
    try:
        async with running(cfg) as gateway:
            sink = Sink()
            gateway.pipeline.accounting.sinks.append(sink)
            yield gateway, sink, sim.url
    finally:
        await sim.close()


def _scope(path: str) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }


def _receive(body: bytes):
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if not messages:
            await asyncio.sleep(3600)  # after the body: nothing (the client stays) until cancelled
        return messages.pop()

    return receive


async def _refused_head(message) -> None:
    if message["type"] == "http.response.start":
        raise RuntimeError("Invalid HTTP header value.")


CHAT = {"model": "g", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
MESSAGES = {"model": "g", "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/messages", MESSAGES),
        ("/v1/messages", {**MESSAGES, "stream": True}),
    ],
)
async def test_a_response_head_the_server_refuses_still_charges_the_call(app, path, body):
    gateway, sink, _ = app
    await gateway(_scope(path), _receive(msgspec.json.encode(body)), _refused_head)
    [call] = sink.calls
    assert call.deployment == "d" and call.usage is not None and call.usage.completion_tokens > 0, call


async def test_a_cancelled_request_still_charges_the_call(app):
    gateway, sink, _ = app
    started = asyncio.Event()

    async def stalled(message) -> None:
        started.set()
        await asyncio.sleep(3600)  # a server that never takes the answer; then the task is cancelled

    task = asyncio.ensure_future(gateway(_scope("/v1/chat/completions"), _receive(msgspec.json.encode(CHAT)), stalled))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [call] = sink.calls
    # Recorded before the answer was handed to the server (its usage row spooled first: metering/spool.py),
    # so a send that never completes leaves the record of the answer that was produced.
    assert call.outcome == "ok" and call.deployment == "d" and call.usage is not None, call


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


class Unhashed(Sink):
    hashes = False  # as metering: reads no hash of the record


@pytest.mark.parametrize("hashed", [False, True])
async def test_a_stream_is_hashed_only_for_a_sink_that_reads_the_hash(app, hashed):
    gateway, sink, _ = app
    accounting = gateway.pipeline.accounting
    accounting.sinks.remove(sink)
    only = sink if hashed else Unhashed()
    accounting.sinks.append(only)
    sent: list[bytes] = []

    async def send(message) -> None:
        if message.get("body"):
            sent.append(message["body"])

    body = msgspec.json.encode({**CHAT, "stream": True})
    await asyncio.wait_for(gateway(_scope("/v1/chat/completions"), _receive(body), send), 30)
    [call] = only.calls
    assert call.outcome == "ok" and call.stream and call.first_byte_ms is not None and call.first_byte_ms >= 0
    if hashed:
        assert call.response_sha256 == hashlib.sha256(b"".join(sent)).hexdigest() and len(call.request_sha256) == 64
    else:
        assert (call.request_sha256, call.response_sha256) == ("", None)


async def test_an_answer_the_door_cannot_translate_is_charged_what_the_upstream_produced(app):
    # A client can have the model call a tool with arguments that are not a JSON object (here the
    # simulator's scripted call; a real model asked to does the same): the Messages door cannot give it as
    # a tool_use block and answers 502. The upstream produced (and billed) the answer all the same, and said
    # how much in its usage: the call is charged that, as any call an upstream answered, not an estimate of
    # its prompt with no output.
    gateway, sink, _ = app
    body = {
        **MESSAGES,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "call lookup [1, 2, 3]"}],
    }
    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(message)

    await asyncio.wait_for(gateway(_scope("/v1/messages"), _receive(msgspec.json.encode(body)), send), 30)
    assert sent[0]["status"] == 502, sent
    assert b"upstream_bad_tool_arguments" in sent[1]["body"] or b"not a JSON object" in sent[1]["body"]
    [call] = sink.calls
    assert call.deployment == "d" and call.usage is not None, call
    assert not call.usage.estimated and call.usage.completion_tokens > 0, call.usage
    # an upstream answered and the gateway could not deliver it (accounting/record.py), not a cut stream
    assert call.outcome == "gateway_error", call.outcome
