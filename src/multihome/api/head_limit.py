"""uvicorn's httptools protocol with a bound on each request's head (request line and headers).

Neither llhttp nor uvicorn limits a request head: a 32 MiB header was read in full (httptools
grows it by repeated concatenation) before the app could refuse the call. This protocol counts the
bytes fed to the parser while a head is incomplete and, past `server.max_header_bytes`, answers 431
in the door's error envelope and stops parsing. What the client still sends is read and dropped for
a moment (so it can read the answer instead of a connection reset), then the connection closes.
Memory stays at the limit plus one socket read. Cost on the plain path: one addition and one
comparison per read of a head; reads of a body go straight to uvicorn.

A request the parser refuses (a malformed request line, header or chunk, conflicting lengths) is
answered 400 in the door's envelope too, not in uvicorn's plain text.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..schema.errors import ApiError
from .pipeline import new_request_id
from .routes import family_of

log = logging.getLogger("multihome.gateway")

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
_LINGER_S = 2.0  # how long a refused client may go on sending before the connection is closed


def protocol(max_head_bytes: int) -> functools.partial[HeadLimitedProtocol]:
    """What uvicorn takes as `http=`: a factory of bounded protocols (picklable, for `--workers`)."""
    return functools.partial(HeadLimitedProtocol, max_head_bytes=max_head_bytes)


_base = HttpToolsProtocol


class HeadLimitedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = max_head_bytes
        # Bytes of the current request's head so far; None while a body is read; -1 once refused.
        self._head: int | None = 0

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head is None:
            _base.data_received(self, data)
            return
        if head < 0:
            return  # refused: dropped unread
        self._head = head + len(data)
        _base.data_received(self, data)
        head = self._head  # None if the head completed in this read
        if head is not None and head > self._max_head and not self.transport.is_closing():
            self._refuse()

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
