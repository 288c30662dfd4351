"""The request-head bound (api/head_limit.py) is exact however the head arrives: a head over
`server.max_header_bytes` is a 431 in the door's envelope whether it comes in one read or many, and a
head of exactly the bound is served, with its body in the same read. The protocol is driven with reads
of the test's choosing (a socket would split them as the kernel likes): before, a head that came in one
read was parsed whole and served, up to a read's size."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from multihome.api.head_limit import protocol

pytestmark = pytest.mark.anyio
LIMIT = 65536


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    out = json.dumps({"body": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


def head_of(size: int, body: bytes = b"") -> bytes:
    """A request whose head (request line to the blank line, inclusive) is exactly `size` bytes."""
    start = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\nX-Pad: " % len(body)
    pad = size - len(start) - 4
    return start + b"p" * pad + b"\r\n\r\n" + body


async def exchange(reads: list[bytes]) -> Transport:
    config = Config(app=app, log_level="critical", lifespan="off")
    proto = protocol(LIMIT)(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    proto.connection_made(transport)
    try:
        for data in reads:
            proto.data_received(data)
        for _ in range(100):  # the app's task answers on the loop
            if transport.out.count(b"HTTP/1.1 ") >= 1 and (b"}" in transport.out):
                break
            await asyncio.sleep(0.01)
    finally:
        proto.connection_lost(None)
    return transport


@pytest.mark.parametrize("size", [LIMIT + 1, 100_000, 200_000])
@pytest.mark.parametrize("split", [False, True])
async def test_a_head_over_the_bound_is_431_in_one_read_or_many(size, split):
    request = head_of(size, b"{}")
    reads = [request[:1000], request[1000:]] if split else [request]
    transport = await exchange(reads)
    assert transport.out.startswith(b"HTTP/1.1 431 "), bytes(transport.out[:200])
    body = json.loads(bytes(transport.out).partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_header_fields_too_large"


@pytest.mark.parametrize("size", [LIMIT, LIMIT - 1, 48_000])
async def test_a_head_within_the_bound_is_served_with_its_body_in_the_same_read(size):
    transport = await exchange([head_of(size, b'{"a": 1}')])
    assert transport.out.startswith(b"HTTP/1.1 200 "), bytes(transport.out[:200])
    assert bytes(transport.out).endswith(b'{"body": 8}')
