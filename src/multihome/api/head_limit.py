"""uvicorn's httptools protocol with a bound on each request's head (request line and headers).

Neither llhttp nor uvicorn limits a request head: a 32 MiB header was read in full (httptools
grows it by repeated concatenation) before the app could refuse the call. This protocol counts the
bytes fed to the parser while a head is incomplete, feeds it no more than the bound allows (a read
that would pass it is parsed up to the bound first), and when a head has not ended within
`server.max_header_bytes` bytes answers 431 in the door's error envelope and stops parsing: the same
answer however the head arrives, in one read or many. What the client still sends is read and dropped for
a moment (so it can read the answer instead of a connection reset), then the connection closes.
Memory stays at the limit plus one socket read. Cost on the plain path: one subtraction and one
comparison per read of a head; reads of a body go straight to uvicorn. A head that begins inside a read
after an earlier request on the connection ended in it (pipelining) is counted from the next read on
(the parser says where a request ends, not at which byte): at most the limit plus that read.

A request the parser refuses (a malformed request line, header or chunk, conflicting lengths) is
answered 400 in the door's envelope too, not in uvicorn's plain text.

uvicorn times out only an idle keep-alive connection: one that opened and sent nothing, or stopped in
the middle of a head or a body, was held for ever (a few thousand such sockets, no key needed, and
the gateway's file descriptors are gone). A timer per connection, every `server.client_idle_timeout_s`,
answers 408 and closes one that waits for the client's bytes and got none since the last tick; the
cost on the plain path is one attribute store per read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..schema.errors import ApiError
from .pipeline import new_request_id
from .routes import family_of

log = logging.getLogger("multihome.gateway")

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_IDLE_S = 30.0
_LINGER_S = 2.0  # how long a refused client may go on sending before the connection is closed


def protocol(max_head_bytes: int, idle_s: float = DEFAULT_IDLE_S) -> functools.partial[HeadLimitedProtocol]:
    """What uvicorn takes as `http=`: a factory of bounded protocols (picklable, for `--workers`)."""
    return functools.partial(HeadLimitedProtocol, max_head_bytes=max_head_bytes, idle_s=idle_s)


_base = HttpToolsProtocol


class HeadLimitedProtocol(HttpToolsProtocol):
    def __init__(
        self, *args: Any, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES, idle_s: float = DEFAULT_IDLE_S, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = max_head_bytes
        # Bytes of the current request's head so far; None while a body is read; -1 once refused.
        self._head: int | None = 0
        self._idle_s = idle_s
        self._read = False  # bytes arrived since the idle timer's last tick
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _base.connection_made(self, transport)
        self._idle_timer = self.loop.call_later(self._idle_s, self._tick)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        _base.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        self._read = True
        head = self._head
        if head is None:
            _base.data_received(self, data)
            return
        if head < 0:
            return  # refused: dropped unread
        room = self._max_head - head
        if len(data) <= room:  # the plain path: the whole read fits within the bound
            self._head = head + len(data)
            _base.data_received(self, data)
            return
        # This read could take the head past the bound (a head sent in one read was parsed whole and let
        # through, up to a read's size, when the bound was checked after it): parse up to the bound only.
        self._head = self._max_head
        if room:
            _base.data_received(self, data[:room])
        if self.transport.is_closing() or self._head is not None and self._head < 0:
            return  # the parser refused it (400), or it was refused
        if self._head == self._max_head:  # no head ended within the bound: it is longer
            self._refuse()
            return
        self.data_received(data[room:])  # the head ended within it: the rest is a body or the next request

    # Called by the parser; the base methods are called directly (no super() on the hot path).
    def on_headers_complete(self) -> None:
        self._head = None
        _base.on_headers_complete(self)

    def on_message_complete(self) -> None:
        _base.on_message_complete(self)
        self._head = 0  # the next request on this connection starts its head

    def _refuse(self) -> None:
        self._head = -1
        self.parser = None  # type: ignore[assignment]  # nothing more is parsed (uvicorn drops it too when the connection is lost)
        log.warning("refused a request head over %d bytes (server.max_header_bytes)", self._max_head)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # an earlier pipelined answer is still being written: no room for ours
            return
        err = ApiError(
            431,
            f"Request headers are larger than the gateway's limit of {self._max_head} bytes "
            "(server.max_header_bytes). Send fewer or shorter headers; put large data in the body.",
            code="request_header_fields_too_large",
        )
        self.transport.write(_answer(getattr(self, "url", b""), err, b"431 Request Header Fields Too Large"))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    def _waiting(self) -> bool:
        """Whether the connection waits for the client's bytes: a head begun (or none yet) with no answer
        under way, or a body not all read that uvicorn is not holding back (flow control)."""
        cycle = self.cycle
        if self._head is not None:
            return self._head >= 0 and (cycle is None or cycle.response_complete)
        return cycle is not None and cycle.more_body and not cycle.response_complete and not self.flow.read_paused

    def _tick(self) -> None:
        self._idle_timer = None
        if self.transport.is_closing():
            return
        if self._read or not self._waiting():
            self._read = False
            self._idle_timer = self.loop.call_later(self._idle_s, self._tick)
            return
        log.info("closed a connection that sent nothing for %.1f s in the middle of a request", self._idle_s)
        self._head = -1
        self.parser = None  # type: ignore[assignment]  # nothing more is parsed
        if self.cycle is None or not self.cycle.response_started:
            err = ApiError(
                408,
                f"The request stopped arriving: nothing was received for {self._idle_s:g} s "
                "(server.client_idle_timeout_s). Send the whole request without pausing.",
                code="request_timeout",
            )
            self.transport.write(_answer(getattr(self, "url", b""), err, b"408 Request Timeout"))
        self.transport.close()  # the handler waiting for the body is told the client left

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser refuses, written in the door's envelope (the URL, when the
        request line was read, says which door; OpenAI's otherwise)."""
        err = ApiError(
            400,
            "The request is not valid HTTP/1.1 (a malformed request line, header or chunk, or conflicting "
            "Content-Length and Transfer-Encoding); it was not read. Percent-encode what a URL may not hold.",
            code="invalid_http_request",
        )
        self.transport.write(_answer(getattr(self, "url", b""), err, b"400 Bad Request"))
        self.transport.close()


def _answer(url: bytes, err: ApiError, status_line: bytes) -> bytes:
    request_id = new_request_id().encode()
    body = family_of(url).error_body(err, request_id)
    return b"".join(
        (
            b"HTTP/1.1 ",
            status_line,
            b"\r\ncontent-type: application/json\r\n",
            b"x-request-id: ",
            request_id,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        )
    )
