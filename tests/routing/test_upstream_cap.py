"""A provider's `max_connections` caps its upstream requests in flight (providers/gate.py), against a
real HTTP upstream: a burst never has more than the cap at the upstream, every way a call ends gives
its permit back (answer read, stream read to its end or closed, a cancel before or after the head, a
connection dropped), and a call waiting for a permit keeps its total timeout and can be cancelled."""

from __future__ import annotations

import asyncio
import time

import msgspec

from builders import config, deployment, group, open_door, simulated, typed
from multihome.routing.catalog import Catalog
from multihome.schema.errors import ApiError
from routing.attempt_call import attempt_call

CAP = 3

_ANSWER = msgspec.json.encode(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)
_EVENT = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",' + (
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}\n\n'
)
_END = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",' + (
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


class Upstream:
    """A keep-alive HTTP/1.1 upstream that counts requests in flight and open connections (now and at
    most) and does what each request's message says: "hold" (answer once released), "head" (a stream's
    head and first event at once, the rest once released), "drop" (close the connection unanswered)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests = self.most_requests = 0
        self.conns = self.most_conns = 0
        self.seen = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def reset(self) -> None:
        self.release = asyncio.Event()
        self.most_requests, self.most_conns = self.requests, self.conns

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        self.most_conns = max(self.most_conns, self.conns)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(
                    (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")),
                    0,
                )
                body = msgspec.json.decode(await reader.readexactly(length))
                self.requests += 1
                self.seen += 1
                self.most_requests = max(self.most_requests, self.requests)
                try:
                    if not await self._answer(body, reader, writer):
                        return
                finally:
                    self.requests -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.conns -= 1
            writer.close()

    async def _answer(self, body: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        mode, stream = body["messages"][0]["content"], body.get("stream", False)
        if mode == "drop":
            return False
        if mode == "head" and stream:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT))
            await writer.drain()
        if not await self._released(reader):
            return False  # the gateway closed the connection (a cancel, a close)
        if stream:
            if mode != "head":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                writer.write(b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT))
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(_END), _END))
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(_ANSWER), _ANSWER)
            )
        await writer.drain()
        return True

    async def _released(self, reader: asyncio.StreamReader) -> bool:
        """Wait for the release; False if the gateway closed the connection first."""
        eof = asyncio.ensure_future(reader.read(1))
        released = asyncio.ensure_future(self.release.wait())
        done, _ = await asyncio.wait({eof, released}, return_when=asyncio.FIRST_COMPLETED)
        if eof in done:
            released.cancel()
            return False
        eof.cancel()
        # Its cancel must be through before the connection's next read (one waiting read at a time).
        await asyncio.gather(eof, return_exceptions=True)
        return True


def _config(url: str) -> dict:
    return config(
        server=open_door(),
        providers={"up": simulated("openai", url, max_connections=CAP)},
        deployments={"d": deployment("up", "m"), "t": deployment("up", "m2")},
        model_groups={
            "g": group("d", retries=0),
            "tight": group("t", retries=0, timeouts={"total_s": 0.5}),
        },
    )


async def _call(catalog: Catalog, mode: str, *, stream: bool = False, name: str = "g"):
    body = msgspec.json.encode({"model": name, "messages": [{"role": "user", "content": mode}], "stream": stream})
    return await attempt_call(catalog, name, body, stream)


async def _until(check, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def _read_all(served) -> bytes:
    pieces = [served.first]
    try:
        async for piece in served.stream.rest():
            pieces.append(piece)
    finally:
        served.stream.close()
    return b"".join(pieces)


async def _burst(up: Upstream, catalog: Catalog, calls: int, *, stream: bool) -> None:
    """`calls` held calls at once: the upstream sees the cap in flight and no more; then all answer."""
    up.reset()
    seen = up.seen

    async def one():
        served = await _call(catalog, "hold", stream=stream)
        assert not isinstance(served, ApiError), served
        return await _read_all(served) if stream else served.body

    tasks = [asyncio.create_task(one()) for _ in range(calls)]
    await _until(lambda: up.requests == CAP, f"the burst never had {CAP} requests at the upstream")
    for _ in range(20):  # a few loop turns more: a call past the cap would have reached the upstream by now
        await asyncio.sleep(0.01)
    assert up.requests == CAP and up.seen - seen == CAP
    up.release.set()
    done, _ = await asyncio.wait(tasks, timeout=60)  # a bound, not a timing: a lost permit hangs the rest
    assert len(done) == calls, f"{calls - len(done)} calls of the burst never got a permit"
    answers = [t.result() for t in tasks]
    assert all(a for a in answers) and up.seen - seen == calls
    assert up.most_requests == CAP and up.most_conns <= CAP, (up.most_requests, up.most_conns)


def test_a_burst_has_at_most_the_cap_in_flight_and_every_end_gives_its_permit_back():
    async def run():
        up = Upstream()
        url = await up.start()
        catalog = Catalog(typed(_config(url)))
        await catalog.start()
        gate = catalog.groups["g"].clients["d"][1]
        try:
            await _burst(up, catalog, 3 * CAP, stream=False)
            await _burst(up, catalog, 3 * CAP, stream=True)
            assert gate.free == CAP

            # Every other way a call ends: cancelled while its request waits (unary, a stream before its
            # head), a stream closed after its head, a dropped connection (unary and streamed), and
            # calls cancelled while they wait for a permit.
            up.reset()
            unary = asyncio.create_task(_call(catalog, "hold"))
            before_head = asyncio.create_task(_call(catalog, "hold", stream=True))
            after_head = await _call(catalog, "head", stream=True)
            assert not isinstance(after_head, ApiError) and after_head.stream is not None
            await _until(lambda: up.requests == CAP, "the three calls never reached the upstream")
            waiting = [asyncio.create_task(_call(catalog, "hold", stream=s)) for s in (False, True)]
            await _until(lambda: len(gate._waiters) == 2, "the calls past the cap are not waiting")
            for task in (unary, before_head, *waiting):
                task.cancel()
            after_head.stream.close()
            await asyncio.gather(unary, before_head, *waiting, return_exceptions=True)
            assert all(t.cancelled() for t in (unary, before_head, *waiting))
            dropped = await asyncio.wait_for(
                asyncio.gather(_call(catalog, "drop"), _call(catalog, "drop", stream=True)), 60
            )  # a bound, not a timing: with permits lost they would wait for ever
            assert all(isinstance(e, ApiError) and e.attempts[0].outcome == "disconnected" for e in dropped), dropped
            await _until(lambda: gate.free == CAP and up.conns == 0, "a permit or a connection was not given back")
            assert not gate._waiters

            # Still the whole cap for the next burst.
            await _burst(up, catalog, 3 * CAP, stream=False)
            await _burst(up, catalog, 2 * CAP, stream=True)
            assert gate.free == CAP
        finally:
            up.release.set()
            await catalog.close()
            assert up.server is not None
            up.server.close()

    asyncio.run(run())


def test_a_call_waiting_for_a_permit_keeps_its_total_timeout():
    async def run():
        up = Upstream()
        url = await up.start()
        catalog = Catalog(typed(_config(url)))
        await catalog.start()
        gate = catalog.groups["g"].clients["d"][1]
        try:
            held = [asyncio.create_task(_call(catalog, "hold")) for _ in range(CAP)]
            await _until(lambda: up.requests == CAP, "the held calls never reached the upstream")
            # Group "tight" (total_s 0.5) shares the provider's pool: its calls wait for a permit, and
            # time out as its total timeout says, unary and streamed, while the upstream holds the others.
            for stream in (False, True):
                err = await _call(catalog, "hold", stream=stream, name="tight")
                assert isinstance(err, ApiError) and [a.outcome for a in err.attempts] == ["timeout"], err
            assert not gate._waiters and up.seen == CAP
            up.release.set()
            assert all(not isinstance(s, ApiError) for s in await asyncio.gather(*held))
            await _until(lambda: gate.free == CAP, "the held calls' permits were not given back")
        finally:
            up.release.set()
            await catalog.close()
            assert up.server is not None
            up.server.close()

    asyncio.run(run())
