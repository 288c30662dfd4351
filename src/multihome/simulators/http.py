"""A tiny HTTP/1.1 server built on ``asyncio.Protocol`` and ``httptools``.

Why not a framework: the simulators must never be the bottleneck of a gateway benchmark, and
a framework's per-request objects (request/response classes, middleware, routing trees) cost
more than the whole canned reply. This module only parses requests, hands them to an *app*
and writes bytes. Everything else (routing, JSON) lives in the app.

The app contract is one method: ``app.handle(conn, request)``. It either writes the complete
response synchronously (the fast path) and returns ``None``, or returns a coroutine, which
runs as a task bound to the connection: the task is cancelled when the client goes away, and
pipelined requests wait until it finishes so responses keep their order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

log = logging.getLogger(__name__)
MAX_BODY = 32 * 1024 * 1024  # far above any provider's limit; stops runaway uploads

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


def build_response(status: int, header_block: bytes, body: bytes, close: bool = False) -> bytes:
    """Serialise a complete response. ``header_block`` is pre-encoded ``name: value\\r\\n`` lines."""
    return b"%scontent-length: %d\r\n%s%s\r\n%s" % (
        status_line(status),
        len(body),
        header_block,
        b"connection: close\r\n" if close else b"",
        body,
    )


def with_close(response: bytes) -> bytes:
    """Add ``connection: close`` to a serialised response (cached replies are built without it)."""
    i = response.index(b"\r\n") + 2
    return response[:i] + b"connection: close\r\n" + response[i:]


class Request:
    """One parsed request. Header names are lower-cased bytes; values are raw bytes."""

    __slots__ = ("method", "url", "headers", "body", "keep_alive", "http_11")

    def __init__(self, method: bytes, url: bytes, headers: dict, body: bytes, keep_alive: bool, http_11: bool):
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http_11 = http_11


class App(Protocol):
    connections: set

    def handle(self, conn: Connection, req: Request) -> Coroutine[Any, Any, None] | None: ...


class Connection(asyncio.Protocol):
    """One client connection: parse, dispatch, write; nothing else."""

    __slots__ = (
        "app",
        "loop",
        "transport",
        "parser",
        "closed",
        "_url",
        "_headers",
        "_body",
        "_body_len",
        "_task",
        "_queue",
        "_paused",
        "_drain",
    )

    transport: asyncio.Transport  # set by connection_made, before any data can arrive

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self._url = b""
        self._headers: dict = {}
        self._body: list = []
        self._body_len = 0
        self._task: asyncio.Task | None = None
        self._queue: deque | None = None
        self._paused = False
        self._drain: asyncio.Future | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport: it writes and closes (uvloop's does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.connections.discard(self)
        if self._task is not None:
            # The client went away mid-reply: cancelling the task is how the app learns it.
            self._task.cancel()
        self._wake_drain()

    def eof_received(self):
        # A client that closes its side is gone for our purposes (we cannot tell a half-close
        # from a full close); returning False closes the transport and cancels any task.
        return False

    def pause_writing(self):
        self._paused = True

    def resume_writing(self):
        self._paused = False
        self._wake_drain()

    def data_received(self, data: bytes):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrade not supported")
        except httptools.HttpParserError:
            if self._body_len > MAX_BODY:
                self._fail(413, b"request body too large")
            else:
                self._fail(400, b"malformed HTTP request")

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self):
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_len = 0

    def on_url(self, url: bytes):
        self._url += url

    def on_header(self, name: bytes, value: bytes):
        self._headers[name.lower()] = value

    def on_headers_complete(self):
        expect = self._headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            # curl sends this for bodies > 1 KiB and would otherwise wait a second.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes):
        self._body_len += len(body)
        if self._body_len > MAX_BODY:
            raise ValueError("body too large")  # surfaces as HttpParserCallbackError -> 413
        self._body.append(body)

    def on_message_complete(self):
        body = self._body
        p = self.parser
        req = Request(
            p.get_method(),
            self._url,
            self._headers,
            body[0] if len(body) == 1 else b"".join(body),
            p.should_keep_alive(),
            p.get_http_version() == "1.1",
        )
        if self._task is not None:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(req)
            return
        self._dispatch(req)

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self, req: Request):
        try:
            coro = self.app.handle(self, req)
        except Exception:  # an app bug: answer 500 and say why in the log, keep serving others
            log.exception("simulator failed to handle %s %r", req.method, req.url)
            self._fail(500, b"simulator error")
            return
        if coro is not None:
            self._task = self.loop.create_task(self._run(coro))

    async def _run(self, coro):
        try:
            await coro
        finally:
            self._task = None
        q = self._queue
        while q and not self.closed and self._task is None:
            self._dispatch(q.popleft())

    # -- writing (used by the app) ---------------------------------------------------------
    def write(self, data: bytes):
        if not self.closed:
            self.transport.write(data)

    def finish(self, keep_alive: bool):
        """Called after a complete response: close unless the client wants keep-alive."""
        if not keep_alive and not self.closed:
            self.closed = True
            self.transport.close()

    @property
    def write_paused(self) -> bool:
        return self._paused

    async def drain(self):
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._paused and not self.closed:
            self._drain = self.loop.create_future()
            await self._drain

    def _wake_drain(self):
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)
        self._drain = None

    def abort(self):
        """Drop the TCP connection without a proper end (mid-stream cut fault)."""
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def _fail(self, status: int, message: bytes):
        if not self.closed:
            body = b'{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":null}}' % message
            self.transport.write(build_response(status, b"content-type: application/json\r\n", body, close=True))
            self.closed = True
            self.transport.close()


async def serve(app: App, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Connection(app, loop), host, port, backlog=1024)
