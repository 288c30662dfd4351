"""The drain deadline (api/drain.py `SseCut`) ends an SSE answer of `send_sse` (api/responses/common.py)
with its `closing` error event, but never after the answer's terminal event (response.completed,
.incomplete, .failed): a cut in the moment between that event and the end of its body (the events'
generator still awaiting its clean-up) used to send an `error` event after it, which a client reads as a
failure of a response that completed. As `StreamRelay.cut` does once its stream is done."""

from __future__ import annotations

import asyncio

import pytest

from multihome.api.drain import SseCut
from multihome.api.pipeline import Call
from multihome.api.responses.common import send_sse
from multihome.schema.errors import ApiError

pytestmark = pytest.mark.anyio
DEADLINE = 30  # seconds: a condition waited for


async def _answer(after_terminal: bytes) -> tuple[list[bytes], SseCut]:
    """An SSE answer whose events end with `after_terminal` (then a wait, as a generator's clean-up may),
    cut by the drain deadline during that wait: the bodies sent, and the cut."""
    call = Call({"type": "http"}, b"req-1")
    sent: list[bytes] = []
    sent_last, waiting, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def send(message):
        if message["type"] == "http.response.body":
            sent.append(message["body"])
            if after_terminal in message["body"]:
                sent_last.set()

    async def receive():
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def events():
        yield b"event: response.created\ndata: {}\n\n"
        yield after_terminal
        waiting.set()
        await release.wait()  # the generator still at work: the cut comes now

    def closing(reason: str, code: str) -> bytes:
        return b"event: error\ndata: " + code.encode() + b"\n\n"

    sending = asyncio.create_task(send_sse(call, receive, send, events(), closing=closing))
    await asyncio.wait_for(sent_last.wait(), DEADLINE)
    await asyncio.wait_for(waiting.wait(), DEADLINE)
    assert isinstance(call.stream, SseCut)
    call.stream.cut("the gateway is shutting down", "shutting_down")
    await asyncio.sleep(0)  # a cut's cancel is delivered (or, after the terminal event, none was made)
    release.set()
    await asyncio.wait_for(sending, DEADLINE)
    return sent, call.stream


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed"])
async def test_no_error_event_is_sent_after_a_terminal_event(status):
    terminal = b"event: response." + status.encode() + b'\ndata: {"type":"response.' + status.encode() + b'"}\n\n'
    sent, cut = await _answer(terminal)
    # Before: an `error` event (shutting_down) after the terminal one.
    assert not any(b"event: error" in body for body in sent), sent
    assert sent[-1] == b"", "the body was not ended"
    assert cut.done


async def test_a_cut_before_the_terminal_event_still_ends_the_answer_with_its_error():
    sent, cut = await _answer(b'event: response.output_text.delta\ndata: {"delta":"response.completed"}\n\n')
    assert sum(b"event: error" in body for body in sent) == 1, sent
    assert sent[-1] == b""
    assert not cut.done


async def test_a_done_cut_cancels_nothing():
    task = asyncio.create_task(asyncio.sleep(DEADLINE))
    cut = SseCut(task)
    cut.done = True
    cut.cut("the gateway is shutting down", "shutting_down")
    await asyncio.sleep(0)
    assert not task.cancelled() and cut.reason is None
    task.cancel()


async def test_a_store_error_after_the_terminal_event_only_ends_the_body():
    """The events raising an ApiError (a store it cannot read) after the terminal event: no error event."""
    sent: list[bytes] = []

    async def send(message):
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    async def receive():
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def events():
        yield b'event: response.completed\ndata: {"type":"response.completed"}\n\n'
        raise ApiError(503, "The store cannot be read.", code="storage_unavailable")

    def closing(reason: str, code: str) -> bytes:
        return b"event: error\ndata: " + code.encode() + b"\n\n"

    await asyncio.wait_for(
        send_sse(Call({"type": "http"}, b"req-2"), receive, send, events(), closing=closing), DEADLINE
    )
    assert not any(b"event: error" in body for body in sent), sent
    assert sent[-1] == b""
