"""The graceful-stop drain in process: /readyz turns 503 when a stop begins, a call still waiting at the
deadline gets a 503 in its own front door's envelope and is recorded, an open stream is cut (not
cancelled), and the drain starts from the very signal that stops uvicorn."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from builders import api_keys, single, typed
from multihome.api.drain import Drain
from multihome.api.pipeline import Call
from multihome.app import build_app

CONFIG = single(server=api_keys("K"), names=("oa", "d", "gpt-4o"))


def _scope(path: str, method: str = "POST") -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "headers": [],
        "query_string": b"",
    }


async def _call(app, scope: dict) -> tuple[int, dict]:
    sent: list[dict] = []

    async def receive():
        await asyncio.Event().wait()  # the client says nothing more

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


class _Tracker:
    request_id = "req_test"
    served = None  # no upstream has answered

    def __init__(self) -> None:
        self.finished: list[tuple] = []

    def finish(self, status, outcome, **kw) -> None:
        self.finished.append((status, outcome, kw.get("error_code")))


async def _forever(call, receive, send) -> None:
    call.request_id = b"req_test"
    call.tracker = tracker = _Tracker()
    call.scope["test.tracker"] = tracker
    await asyncio.Event().wait()  # an upstream that has not answered yet


def test_readyz_answers_503_once_a_drain_began(monkeypatch):
    monkeypatch.setenv("K", "client-key")
    gateway = build_app(typed(CONFIG))
    gateway.ready = True  # as after the lifespan start-up

    async def run():
        assert await _call(gateway, _scope("/readyz", "GET")) == (200, {"status": "ok"})
        gateway.drain.begin()
        try:
            assert await _call(gateway, _scope("/readyz", "GET")) == (503, {"status": "draining"})
            assert (await _call(gateway, _scope("/healthz", "GET")))[0] == 200  # alive, just not taking calls
        finally:
            gateway.drain.close()

    asyncio.run(run())


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_call_still_waiting_at_the_deadline_gets_a_503_in_its_doors_envelope(monkeypatch, path):
    monkeypatch.setenv("K", "client-key")
    gateway = build_app(typed(CONFIG))
    drain = gateway.drain = Drain(0.05)
    gateway._http = _forever  # the call is still routing when the deadline comes
    scope = _scope(path)

    async def run():
        drain.begin()
        return await asyncio.wait_for(_call(gateway, scope), 5)

    status, body = asyncio.run(run())
    assert status == 503
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "api_error" and body["request_id"] == "req_test"
        message = body["error"]["message"]
    else:
        assert body["error"]["code"] == "gateway_shutting_down" and body["error"]["type"] == "server_error"
        message = body["error"]["message"]
    assert "drain deadline (0.05s)" in message and "retry" in message
    # Recorded like a call its client abandoned: the upstream may already have been working on it.
    assert scope["test.tracker"].finished == [(503, "cancelled", "gateway_shutting_down")]


def test_a_stream_open_at_the_deadline_is_cut_and_ends_on_its_own():
    drain = Drain(0.05)
    cuts: list[tuple[str, str]] = []

    class Relay:
        def __init__(self) -> None:
            self.ended = asyncio.Event()

        def cut(self, reason: str, code: str) -> None:
            cuts.append((reason, code))
            self.ended.set()

    async def streaming(call, receive, send) -> None:
        call.stream = relay = Relay()
        await relay.ended.wait()  # the relay writes its error event, then the stream ends normally

    async def refuse(call, send, err) -> None:
        raise AssertionError("a stream is cut, never refused")

    async def run():
        drain.begin()
        await asyncio.wait_for(
            drain.serve(streaming, Call(_scope("/v1/chat/completions"), b"req_1"), None, None, refuse), 5
        )

    asyncio.run(run())
    assert cuts == [("the gateway is shutting down and its drain deadline (0.05s) passed", "gateway_shutting_down")]


def test_a_call_arriving_after_the_deadline_is_refused_at_once():
    drain = Drain(0.0)
    refused = []

    async def handler(call, receive, send) -> None:
        raise AssertionError("not served after the deadline")

    async def refuse(call, send, err) -> None:
        refused.append(err.status)

    async def run():
        drain.begin()
        await asyncio.sleep(0.01)
        await drain.serve(handler, Call(_scope("/v1/chat/completions"), b"req_1"), None, None, refuse)

    asyncio.run(run())
    assert refused == [503]


def test_the_drain_begins_on_uvicorns_stop_signal_and_hands_it_on():
    seen: list[int] = []
    originals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}  # restored as uvicorn does
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # stands in for uvicorn's handler
    try:
        drain = Drain(60)
        drain.on_signals = True

        async def run():
            drain.start()
            signal.raise_signal(signal.SIGTERM)
            for _ in range(100):
                if drain.draining:
                    break
                await asyncio.sleep(0.01)
            drain.close()

        asyncio.run(run())
        assert drain.draining and seen == [signal.SIGTERM]
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)


def test_each_call_is_registered_under_its_own_task_on_whichever_loop_runs_it():
    drain = Drain(60)
    seen: list[bool] = []

    async def run():
        call = Call(_scope("/v1/chat/completions"), b"req_1")
        task = drain.enter(call)
        seen.append(task is asyncio.current_task() and drain._calls.get(task) is call)
        drain.leave(task)

    for _ in range(2):  # a second loop: the loop the drain learned first is no longer running
        asyncio.run(run())
    assert seen == [True, True] and not drain._calls
