"""The HTTP/1.1 layer at the socket level: keep-alive, pipelining, framing, bad requests."""

from __future__ import annotations

import asyncio
import socket

import pytest

from .sim_helpers import OPENAI_KEY

CHAT = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def request(body: bytes = CHAT, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + OPENAI_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
    )


def read_until_closed(sock: socket.socket, timeout: float = 3.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        part = sock.recv(65536)
        if not part:
            return out
        out += part


def read_responses(sock: socket.socket, n: int, timeout: float = 3.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while out.count(b"HTTP/1.1 ") < n or not out.endswith(b"}"):
        out += sock.recv(65536)
    return out


@pytest.fixture
def conn(osim):
    s = socket.create_connection((osim.config.host, osim.port))
    yield s
    s.close()


def test_keep_alive_and_pipelining(conn, osim):
    conn.sendall(request() + request() + request(extra=b"x-sim-fault: latency_ms=50\r\n") + request())
    data = read_responses(conn, 4)
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert osim.stats()["completed"] == 4
    # Still open for one more request on the same connection.
    conn.sendall(request())
    assert b"200 OK" in read_responses(conn, 1)


def test_connection_close_is_honoured(conn):
    conn.sendall(request(extra=b"Connection: close\r\n"))
    data = read_until_closed(conn)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in data.lower()


def test_chunked_request_body_is_accepted(conn):
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT)
    conn.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + OPENAI_KEY.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
    )
    assert read_responses(conn, 1).startswith(b"HTTP/1.1 200 OK")


def test_expect_100_continue(conn):
    head = request().split(b"\r\n\r\n")[0] + b"\r\nExpect: 100-continue\r\n\r\n"
    conn.sendall(head)
    conn.settimeout(2)
    assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue")
    conn.sendall(CHAT)
    assert b"200 OK" in read_responses(conn, 1)


def test_garbage_gets_400_and_close(conn):
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    data = read_until_closed(conn)
    assert data.startswith(b"HTTP/1.1 400")


def test_http10_stream_is_close_delimited(conn):
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    conn.sendall(request(body).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    data = read_until_closed(conn)
    assert b"transfer-encoding" not in data.lower() and data.rstrip().endswith(b"data: [DONE]")


def test_in_process_api_and_close_drops_hanging_clients():
    from multihome.simulators import SimulatorConfig, start_simulator

    async def main():
        sim = await start_simulator(SimulatorConfig(kind="openai", name="inproc"))
        assert sim.url == f"http://127.0.0.1:{sim.port}"
        sim.state.set_fault({"hang": True})
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(request())
        await writer.drain()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(sim.close(), 2)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # connection dropped, no reply
        await asyncio.sleep(0)
        assert sim.state.stats.cancelled == 1
        writer.close()

    asyncio.run(main())


def test_oversize_body_is_413(conn, monkeypatch):
    from multihome.simulators import http

    monkeypatch.setattr(http, "MAX_BODY", 1000)
    conn.sendall(request(b"x" * 2000))
    assert read_until_closed(conn).startswith(b"HTTP/1.1 413")
