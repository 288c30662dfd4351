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

from multihome.api.asgi import CANCEL_ON_HANG_UP, HUNG_UP, hang_up_cancels
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


def connected(asgi_app: Any) -> tuple[Any, Transport]:
    """The gateway's protocol serving `asgi_app` on a fresh connection (bytes in by data_received)."""
    config = Config(app=asgi_app, log_level="critical", lifespan="off")
    proto = protocol(LIMIT)(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    proto.connection_made(transport)
    return proto, transport


async def exchange(reads: list[bytes]) -> Transport:
    proto, transport = connected(app)
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


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nX-Pad: " + b"p" * LIMIT + b"\r\n\r\n",  # the 431
        b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",  # the 400
    ],
    ids=["431", "400"],
)
async def test_an_answer_before_the_anthropic_door_names_its_request_id_as_the_anthropic_sdk_reads_it(request_bytes):
    """docs/anthropic-front-door.md: every answer carries the id as `x-request-id` and as `request-id` (what the
    anthropic SDK puts in an error's `request_id`). These two were written with `x-request-id` only."""
    transport = await exchange([request_bytes])
    head, _, body = bytes(transport.out).partition(b"\r\n\r\n")
    request_id = json.loads(body)["request_id"].encode()
    lines = head.lower().split(b"\r\n")
    assert b"x-request-id: " + request_id in lines and b"request-id: " + request_id in lines, head


@pytest.mark.parametrize("size", [LIMIT, LIMIT - 1, 48_000])
async def test_a_head_within_the_bound_is_served_with_its_body_in_the_same_read(size):
    transport = await exchange([head_of(size, b'{"a": 1}')])
    assert transport.out.startswith(b"HTTP/1.1 200 "), bytes(transport.out[:200])
    assert bytes(transport.out).endswith(b'{"body": 8}')


# Pipelining: requests after the first in a read, or after a body that ended inside a read. Before, a head
# that began inside the read that ended the request before it was counted from the next read on: one of
# LIMIT + 1 bytes (or up to a read's size) was served.

served: list[bytes] = []


async def recording_app(scope, receive, send) -> None:
    if scope["type"] == "http":
        served.append(scope["path"].encode())
    await app(scope, receive, send)


def request(path: bytes, head: int, body: bytes = b"", chunked: bool = False) -> bytes:
    """A request to `path` whose head is exactly `head` bytes."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    start = b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\n" + framing + b"\r\nX-Pad: "
    pad = head - len(start) - 4
    if chunked:
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:3], body[3:]) if part) + b"0\r\n\r\n"
    return start + b"p" * pad + b"\r\n\r\n" + body


async def pipelined(reads: list[bytes], answers: int) -> Transport:
    served.clear()
    proto, transport = connected(recording_app)
    try:
        for data in reads:
            proto.data_received(data)
            await asyncio.sleep(0)  # the app's tasks may run between reads
        for _ in range(200):
            if transport.closing or transport.out.count(b"HTTP/1.1 ") >= answers:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    finally:
        proto.connection_lost(None)
    return transport


def _reads(first: bytes, second: bytes, where: str) -> list[bytes]:
    """Two pipelined requests as reads: both in one, or the first's body split so the second begins in
    the read that ends it, or the second's head split across two reads."""
    both = first + second
    if where == "one read":
        return [both]
    if where == "body ends mid-read":
        return [first[:-2], first[-2:] + second]
    if where == "body over three reads":  # a chunk-size line split between reads, for a chunked body
        return [first[:301], first[301:-3], first[-3:] + second]
    return [both[: len(first) + 100], both[len(first) + 100 :]]  # the second head over two reads


WHERE = ["one read", "body ends mid-read", "body over three reads", "head over two reads"]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("complete", [True, False], ids=["whole", "partial"])
async def test_a_pipelined_head_over_the_bound_is_refused(where, chunked, complete):
    first = request(b"/first", 300, b'{"a": 1}', chunked=chunked)
    second = request(b"/second", LIMIT + 1 if complete else LIMIT + 100, b"{}")
    if complete:
        reads = _reads(first, second, where)
    else:  # the head is past the bound before it ends: the rest comes in one more read
        reads = [*_reads(first, second[: LIMIT + 50], where), second[LIMIT + 50 :]]
    transport = await pipelined(reads, 2)
    assert b"/second" not in served
    assert transport.closing  # after the first's answer, or at once while it is being written
    assert transport.out.count(b"HTTP/1.1 200 ") <= 1


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("size", [LIMIT, 1000])
async def test_a_pipelined_head_within_the_bound_is_served(where, chunked, size):
    first = request(b"/first", 300, b'{"a": 1}', chunked=chunked)
    second = request(b"/second", size, b'{"b": 22}')
    transport = await pipelined(_reads(first, second, where), 2)
    assert served == [b"/first", b"/second"]
    out = bytes(transport.out)
    assert out.count(b"HTTP/1.1 200 ") == 2 and out.endswith(b'{"body": 9}'), out[-300:]


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT])
async def test_of_three_requests_in_one_read_the_middle_head_is_held_to_the_bound(size):
    reads = [request(b"/a", 200, b"{}") + request(b"/b", size, b"{}") + request(b"/c", 200, b"{}")]
    transport = await pipelined(reads, 3)
    if size > LIMIT:
        assert served == [b"/a"] or served == [], served
        assert transport.closing
    else:
        assert served == [b"/a", b"/b", b"/c"]


@pytest.mark.parametrize("step", [1, 7, 64, 301, 4096, 1 << 20])
async def test_pipelined_requests_split_anywhere_are_all_served_in_order(step):
    """The framing never refuses or drops a valid request, wherever the reads split the stream."""
    stream = b"".join(
        [
            request(b"/a", 200, b'{"a": 1}'),
            request(b"/b", 3000, b'{"b": 22}', chunked=True),
            b"\r\n",  # an empty line before a request, which the parser skips
            b"GET /c HTTP/1.1\r\nHost: gw\r\n\r\n",
            request(b"/d", LIMIT, b"{}", chunked=True),
            request(b"/e", 500, b"x" * 5000),
        ]
    )
    reads = [stream[i : i + step] for i in range(0, len(stream), step)]
    transport = await pipelined(reads, 5)
    assert served == [b"/a", b"/b", b"/c", b"/d", b"/e"]
    assert bytes(transport.out).count(b"HTTP/1.1 200 ") == 5


# Well-formed framing the gateway's own walk must follow as the parser does: chunk extensions (one with a
# quoted ';'), trailers, Expect, HEAD, Content-Length: 0, lowercase names, tab OWS, a leading empty line
# and bodies that hold CRLF CRLF.
EDGE = [
    b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'2;e=1;q="x;y"\r\n{}\r\n0;z=2\r\nX-Trailer: 1\r\nY-Trailer: 2\r\n\r\n',
    b"POST /b HTTP/1.1\r\nhost: gw\r\nexpect: 100-continue\r\ncontent-length:\t4\t\r\n\r\n\r\n\r\n",
    b"HEAD /c HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"\r\nPOST /d HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n",
    b"GET /e HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\n\r\n\r\n",
    b"POST /f HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n4\r\n\r\n\r\n\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 13, 1 << 20])
async def test_edge_case_framing_split_anywhere_is_served_in_order(step):
    stream = b"".join(EDGE)
    transport = await pipelined([stream[i : i + step] for i in range(0, len(stream), step)], len(EDGE))
    assert served == [b"/a", b"/b", b"/c", b"/d", b"/e", b"/f"]
    assert bytes(transport.out).count(b"HTTP/1.1 200 ") == len(EDGE)


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT])
@pytest.mark.parametrize("cut", [0, 2, 5, 17, 30, 40, 52])  # bytes from the body's end: trailers, last chunk, extension
async def test_a_head_after_a_body_with_extensions_and_trailers_is_held_to_the_bound(size, cut):
    stream = EDGE[0] + request(b"/second", size, b"{}")
    reads = [stream[: len(EDGE[0]) - cut], stream[len(EDGE[0]) - cut :]] if cut else [stream]
    transport = await pipelined(reads, 2)
    if size > LIMIT:
        assert b"/second" not in served and transport.closing
    else:
        assert served == [b"/a", b"/second"]


# A chunk-size line (its extension) or a trailer section longer than any one read's share: followed as a
# state across reads. Before, over 4 KiB of either split across reads was not followed, and the head after
# the body went to the parser unbounded for a read.
LONG_FRAMING = {
    "extension": b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2;e=" + b"x" * 6000 + b"\r\n{}\r\n0\r\n\r\n",
    "trailers": b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\n{}\r\n0\r\nX-Trailer: " + b"t" * 6000 + b"\r\nY-Trailer: 2\r\n\r\n",
}


@pytest.mark.parametrize("framing", LONG_FRAMING)
@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT])
@pytest.mark.parametrize("split", [[100], [5000, 300], list(range(5900, 6050, 7))], ids=["one", "two", "many"])
async def test_a_head_after_a_long_size_line_or_trailers_split_across_reads_is_held_to_the_bound(framing, size, split):
    first = LONG_FRAMING[framing]
    cuts = [len(first) - 6100 + at for at in split]  # inside the extension or the trailer
    stream = first + request(b"/second", size, b"{}")
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    transport = await pipelined(reads, 2)
    if size > LIMIT:
        assert b"/second" not in served and transport.closing
    else:
        assert served == [b"/a", b"/second"]


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT])
@pytest.mark.parametrize("step", [1000, 1 << 20])
async def test_a_trailer_section_over_the_bound_is_431(size, step):
    """Trailers are header fields, each of which uvicorn keeps: a chunked body's trailer section was read
    without a bound (megabytes of them, never an answer while they came). Now held to the head's bound."""
    start = b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    line = b"X-T: " + b"t" * 1000 + b"\r\n"
    trailers = line * (size // len(line))
    trailers += b"X-Last: " + b"t" * (size - len(trailers) - len(b"X-Last: \r\n") - 2) + b"\r\n"
    stream = start + trailers + b"\r\n"
    assert len(trailers) + 2 == size
    transport = await pipelined([stream[i : i + step] for i in range(0, len(stream), step)], 1)
    out = bytes(transport.out)
    if size > LIMIT:
        assert out.startswith(b"HTTP/1.1 431 ") and transport.closing, out[:200]
        assert b"request_header_fields_too_large" in out
    else:
        assert served == [b"/a"] and out.startswith(b"HTTP/1.1 200 "), out[:200]


class Stateful:
    """A stateful call's handler: it reads its state, then its upstream call runs with a hang-up cancelling it
    (asgi.hang_up_cancels), then it stores the answer with a hang-up no longer cancelling it."""

    def __init__(self) -> None:
        self.reading, self.upstream, self.storing = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.release = asyncio.Event()  # lets the step the test holds it in go on
        self.steps: list[str] = []
        self.hung_up: object = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        try:
            self.reading.set()
            await self.release.wait()  # reading its state
            self.release.clear()
            hang_up_cancels(scope)
            self.steps.append("upstream")
            self.upstream.set()
            await self.release.wait()  # its upstream call
            self.release.clear()
            scope[CANCEL_ON_HANG_UP] = False
            self.steps.append("stored")
            self.storing.set()
            await self.release.wait()  # storing the answer
            self.steps.append("answered")
        except asyncio.CancelledError:  # as the gateway ends a call its client hung up on (api/gateway.py)
            self.steps.append("cancelled")
            self.hung_up = scope.get(HUNG_UP)


async def _hang_up_at(step: str) -> Stateful:
    handler = Stateful()
    proto, _ = connected(handler)
    proto.data_received(b"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}")
    reached = getattr(handler, step)
    for _ in range(1000):
        if reached.is_set():
            break
        if handler.reading.is_set():
            handler.release.set()  # on to the next step
        await asyncio.sleep(0.01)
    assert reached.is_set()
    proto.connection_lost(None)  # the client hung up
    for _ in range(3):
        handler.release.set()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*proto.tasks), 10)
    return handler


async def test_a_stateful_call_whose_client_left_while_it_read_its_state_ends_before_its_upstream_call():
    handler = await _hang_up_at("reading")
    assert handler.steps == ["cancelled"] and handler.hung_up is True


async def test_a_hang_up_cancels_a_stateful_call_s_upstream_call():
    handler = await _hang_up_at("upstream")
    assert handler.steps == ["upstream", "cancelled"] and handler.hung_up is True


async def test_a_hang_up_once_a_stateful_call_stores_its_answer_lets_it_finish():
    handler = await _hang_up_at("storing")
    assert handler.steps == ["upstream", "stored", "answered"] and handler.hung_up is None
