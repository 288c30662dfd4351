"""The upstream client's behaviours the attempt loop relies on, against real HTTP servers: what
providers/transport.py sets on pyqwest (no system proxy, one client per set of timeouts, the
first-byte timeout), how its errors read as attempt outcomes, and a drain's cut waking a stream
read the upstream keeps waiting."""

from __future__ import annotations

import asyncio
import time

import msgspec

from builders import config, deployment, group, open_door, simulated, typed
from multihome.providers.transport import Transport
from multihome.routing.catalog import Catalog
from multihome.schema.errors import ApiError
from multihome.simulators import SimulatorConfig, start_simulator
from ports import free_port
from routing.attempt_call import attempt_call

BODY = msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}]})
STREAM = msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}], "stream": True})


def _config(url: str) -> dict:
    return config(
        server=open_door(),
        providers={"sim": simulated("openai", url)},
        deployments={"primary": deployment("sim", "primary-model"), "other": deployment("sim", "other-model")},
        model_groups={
            "g": group("primary", retries=0),
            "same": group("primary", "other", retries=0),
            "short": group("primary", retries=0, timeouts={"first_byte_s": 0.5}),
        },
    )


async def _call(catalog: Catalog, name: str, body: bytes = BODY, stream: bool = False):
    return await attempt_call(catalog, name, body, stream)


def test_a_system_proxy_is_not_used(monkeypatch):
    # reqwest reads HTTP(S)_PROXY when a client is built; the gateway calls the addresses its config names.
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)

    async def run():
        sim = await start_simulator(SimulatorConfig(kind="openai", name="unit"))
        catalog = Catalog(typed(_config(sim.url)))
        await catalog.start()
        try:
            return await _call(catalog, "g")
        finally:
            await catalog.close()
            await sim.close()

    served = asyncio.run(run())
    assert not isinstance(served, ApiError), served
    assert served.status == 200 and [a.outcome for a in served.attempts] == ["ok"]


def test_groups_with_the_same_timeouts_share_a_client_and_others_get_their_own():
    async def run():
        catalog = Catalog(typed(_config("http://127.0.0.1:1")))
        await catalog.start()
        try:
            g, same, short = (catalog.groups[n] for n in ("g", "same", "short"))
            assert g.clients["primary"] is same.clients["primary"] is same.clients["other"]
            assert short.clients["primary"] is not g.clients["primary"]
        finally:
            await catalog.close()

    asyncio.run(run())


def test_a_refused_connection_is_a_connection_error():
    async def run():
        catalog = Catalog(typed(_config(f"http://127.0.0.1:{free_port()}")))
        await catalog.start()
        try:
            return await _call(catalog, "g")
        finally:
            await catalog.close()

    err = asyncio.run(run())
    assert isinstance(err, ApiError) and err.status == 503
    assert [a.outcome for a in err.attempts] == ["connection_error"]


def test_the_first_byte_timeout_ends_an_attempt_the_upstream_keeps_waiting():
    async def run():
        sim = await start_simulator(SimulatorConfig(kind="openai", name="unit"))
        sim.state.set_fault({"match": "primary-model", "latency_ms": 30_000})
        catalog = Catalog(typed(_config(sim.url)))
        await catalog.start()
        try:
            return await _call(catalog, "short")
        finally:
            await catalog.close()
            await sim.close()

    err = asyncio.run(run())
    assert isinstance(err, ApiError) and err.status == 503
    assert [a.outcome for a in err.attempts] == ["timeout"]
    assert err.attempts[0].ms < 20_000  # the group's 0.5 s, not the upstream's 30 s


_EVENT = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",' + (
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}\n\n'
)


async def _stalling_upstream():
    """An upstream whose stream sends one event and then nothing for a minute (a read stays waiting)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_EVENT)
        await asyncio.sleep(60)
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _reading(catalog: Catalog, consume):
    """A stream served from `catalog`'s group g, its rest() consumed by a task that is in a read."""
    served = await _call(catalog, "g", STREAM, stream=True)
    assert not isinstance(served, ApiError), served
    relay = served.stream
    assert relay is not None
    task = asyncio.create_task(consume(relay))
    deadline = time.monotonic() + 20
    while not relay._in_read:  # the relay is in a read the upstream has not answered
        assert time.monotonic() < deadline, "the relay never started its read"
        await asyncio.sleep(0.01)
    return relay, task


def test_a_cut_wakes_a_stream_read_the_upstream_keeps_waiting():
    pieces: list[bytes] = []

    async def consume(relay) -> None:
        async for piece in relay.rest():
            pieces.append(piece)

    async def run():
        runner, url = await _stalling_upstream()
        catalog = Catalog(typed(_config(url)))
        await catalog.start()
        try:
            relay, task = await _reading(catalog, consume)
            relay.cut("the gateway is shutting down", "gateway_shutting_down")
            done, _ = await asyncio.wait({task}, timeout=20)  # far below the upstream's 60 s
            assert done, "the cut did not wake the read"
            task.result()
        finally:
            await catalog.close()
            await runner.cleanup()

    asyncio.run(run())
    assert pieces and b"gateway_shutting_down" in pieces[-1] and b"the gateway is shutting down" in pieces[-1]


def test_a_cancelled_stream_reader_stays_cancelled():
    # The relay turns only its own cancellation into a cut: a client going away still cancels the task.
    async def consume(relay) -> None:
        async for _ in relay.rest():
            pass

    async def run():
        runner, url = await _stalling_upstream()
        catalog = Catalog(typed(_config(url)))
        await catalog.start()
        try:
            relay, task = await _reading(catalog, consume)
            task.cancel()
            relay.cut("the gateway is shutting down", "gateway_shutting_down")
            done, _ = await asyncio.wait({task}, timeout=20)
            assert done and task.cancelled()
            relay.close()
        finally:
            await catalog.close()
            await runner.cleanup()

    asyncio.run(run())


async def _raw_upstream(answer_after_s: float):
    """A raw HTTP/1.1 upstream that records each request line and whether the gateway closed the
    connection before the (late) answer."""
    seen: dict[str, object] = {"lines": [], "closed_early": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
        )
        await reader.readexactly(length)
        seen["lines"].append(head.split(b"\r\n")[0])  # type: ignore[attr-defined]
        try:
            if await asyncio.wait_for(reader.read(1), answer_after_s) == b"":
                seen["closed_early"] = seen["closed_early"] + 1  # type: ignore[operator]
        except TimeoutError:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def test_an_encoded_path_goes_on_the_wire_as_it_is():
    # Bedrock's signature covers the path's exact bytes (%3A, %2F as botocore encodes a model id).
    async def run():
        server, url, seen = await _raw_upstream(0)
        pool = Transport().open("raw", 4)
        try:
            client = pool.client((5.0, 30.0, None))
            await client.post(url + "/model/a%3Ab%2Fc%20d%7Ee/x?q=%2F", {"content-type": "application/json"}, b"{}")
        finally:
            await pool.close()
            server.close()
        return seen["lines"]

    assert asyncio.run(run()) == [b"POST /model/a%3Ab%2Fc%20d%7Ee/x?q=%2F HTTP/1.1"]


def test_a_cancelled_call_closes_its_upstream_connection():
    # A hedge's loser, a client that went away: the upstream request must end with the call, not hold a
    # provider connection until the upstream answers (here: a minute later).
    async def run(stream: bool):
        server, url, seen = await _raw_upstream(60)
        pool = Transport().open("raw", 4)
        try:
            client = pool.client((5.0, 120.0, None))
            call = client.stream("POST", url, {}, b"{}") if stream else client.post(url, {}, b"{}")
            task = asyncio.ensure_future(call)
            deadline = time.monotonic() + 20
            while not seen["lines"]:
                assert time.monotonic() < deadline, "the request never reached the upstream"
                await asyncio.sleep(0.01)
            task.cancel()
            while not seen["closed_early"]:
                assert time.monotonic() < deadline, "the upstream connection stayed open after the cancel"
                await asyncio.sleep(0.01)
            assert task.cancelled()
        finally:
            await pool.close()
            server.close()

    asyncio.run(run(stream=False))
    asyncio.run(run(stream=True))
