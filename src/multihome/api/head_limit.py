"""uvicorn's httptools protocol with a bound on each request's head (request line and headers).

Neither llhttp nor uvicorn limits a request head: a 32 MiB header was read in full (httptools
grows it by repeated concatenation) before the app could refuse the call. This protocol counts the
bytes fed to the parser while a head is incomplete, feeds it no more than the bound allows (a read
that would pass it is parsed up to the bound first), and when a head has not ended within
`server.max_header_bytes` bytes answers 431 in the door's error envelope and stops parsing: the same
answer however the head arrives, in one read or many. What the client still sends is read and dropped for
a moment (so it can read the answer instead of a connection reset), then the connection closes.
Memory stays at the limit plus one socket read. Cost on the plain path: one subtraction and one
comparison per read of a head; reads of a body go straight to uvicorn.

Pipelining: the parser says that a request ended, not at which byte, so a head that begins inside the
read that ended the request before it (or several whole requests in one read) is found by the gateway's
own framing of that read, after the parser took it (`_Framing`: a head ends at its first CRLF CRLF, which
the parser requires; a body is `Content-Length` bytes, or chunks): each such head is held to the same
bound, exactly. A body that goes on past its head's read is followed (bytes counted down, or its chunk
framing walked, per chunk), and the read in which it ends is split there, so the next head is counted
from its first byte. The plain path (a read that holds one whole request) pays two counter updates per
request; the framing runs only when a read held more, or a body went on past it. A chunked body's framing is
followed as a state (where in a chunk-size line, chunk or trailer section the last read stopped, `_Chunked`),
never by keeping bytes, so a size line or trailers split across any number of reads are followed too. A
trailer section is header fields (llhttp hands each to uvicorn, which keeps them all) and is held to the same
bound, counted as it arrives in the reads after its head's: past it, a 431, then the connection closes.

A request the parser refuses (a malformed request line, header or chunk, conflicting lengths) is
answered 400 in the door's envelope too, not in uvicorn's plain text.

uvicorn times out only an idle keep-alive connection: one that opened and sent nothing, or stopped in
the middle of a head or a body, was held for ever (a few thousand such sockets, no key needed, and
the gateway's file descriptors are gone). A timer per connection, every `server.client_idle_timeout_s`,
answers 408 and closes one that waits for the client's bytes and got none since the last tick; the
cost on the plain path is one attribute store per read.

A client that hangs up before its answer began (the SDKs close the connection when their timeout passes,
then send the call again) cancels a stateless model call's task, as a stream's own watcher does once it
streams (api/render.py): the upstream call stops instead of running, and being billed, for an answer
nobody reads, once per attempt. What the upstream produced is still charged (accounting/tracker.py
`settle`). A stateful call says when a hang-up may cancel it (`asgi.hang_up_cancels`): a foreground
Responses turn while its upstream call is in flight, before anything of it is stored (a hang-up that
came earlier, while it read its state, is noted in its scope and ends it there); a foreground agent run
while a model step is in flight, and it stops itself at its next step or tool call otherwise
(api/responses/agent.py). The rest of stateful work (storing an answer, a tool call, background creates,
Conversations, memory, admin) runs to its end: a write cut short by a hang-up would be worse than the
work. Cost on the plain path: one attribute store per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..schema.errors import ApiError
from .asgi import HUNG_UP, client_gone
from .pipeline import new_request_id
from .routes import family_of

log = logging.getLogger("multihome.gateway")

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_IDLE_S = 30.0
_LINGER_S = 2.0  # how long a refused client may go on sending before the connection is closed
# The stateless model calls a hang-up before their answer cancels (the doors' paths, aliases included).
_ABANDONED_ON_HANG_UP = frozenset(
    {"/v1/chat/completions", "/chat/completions", "/v1/embeddings", "/embeddings", "/v1/messages"}
)


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
        # A body that goes on past its head's read: Content-Length bytes still to come; -1: chunked (its
        # framing in _chunk); None: not followed.
        self._left: int | None = None
        self._chunk = _Chunked()
        self._ends = 0  # requests the parser has ended on this connection
        self._ended: object = None  # the scope of the last one it ended
        self._partial: list[bytes] | None = None  # a head's reads so far, while it spans reads
        self._idle_s = idle_s
        self._read = False  # bytes arrived since the idle timer's last tick
        self._idle_timer: asyncio.TimerHandle | None = None
        self._refusal_due = False  # a head was refused while earlier answers were still being written
        self._asgi: tuple[Any, asyncio.Task[None]] | None = None  # the request being answered, and its task

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _base.connection_made(self, transport)
        self._idle_timer = self.loop.call_later(self._idle_s, self._tick)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        _base.connection_lost(self, exc)
        running = self._asgi
        if running is not None:
            self._asgi = None
            cycle, task = running
            if not cycle.response_started and not task.done():
                scope = cycle.scope
                if scope["path"] in _ABANDONED_ON_HANG_UP:
                    scope[HUNG_UP] = True
                    task.cancel()
                else:  # a stateful call: cancelled only in its cancellable part, else told (asgi.client_gone)
                    client_gone(scope, task)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn's own (0.55), keeping the task, which a hang-up before the answer cancels (connection_lost).
        if self.config.reset_contextvars:
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._asgi = (cycle, task)

    def data_received(self, data: bytes) -> None:
        self._read = True
        head = self._head
        if head is None:
            left = self._left
            if left is None:
                _base.data_received(self, data)  # a body whose end is not followed (see the docstring)
                return
            if left < 0:  # a chunked body: its framing followed from read to read
                left = self._chunks(data)
                if left < 0:
                    return  # trailers past the bound: refused
            if len(data) <= left:
                if self._left is not None and self._left >= 0:
                    self._left -= len(data)
                _base.data_received(self, data)
                return
            self._left = None  # the body ends inside this read: split there
            if left:
                _base.data_received(self, data[:left])
            if self.transport.is_closing():
                return  # refused by the parser
            if self._head is None:  # (never, for a valid body) not ended there: the parser takes the rest
                _base.data_received(self, data[left:])
                return
            self.data_received(data[left:])  # the next request, counted from its first byte
            return
        if head < 0:
            return  # refused: dropped unread
        room = self._max_head - head
        if len(data) <= room:  # the plain path: the whole read fits within the bound
            self._head = head + len(data)
            ends = self._ends
            _base.data_received(self, data)
            # Unless one request ended exactly with this read (the plain path), frame what the read held.
            if self._head != 0 or self._ends != ends + 1 or self.scope is not self._ended or self._partial:
                self._after(data, ends)
            return
        # This read could take the head past the bound (a head sent in one read was parsed whole and let
        # through, up to a read's size, when the bound was checked after it): parse up to the bound only.
        self._head = self._max_head
        ends = self._ends
        if room:
            _base.data_received(self, data[:room])
        if self.transport.is_closing() or self._head is not None and self._head < 0:
            return  # the parser refused it (400), or it was refused
        if self._head == self._max_head:  # no head ended within the bound: it is longer
            self._refuse()
            return
        self._after(data[:room], ends)  # the head ended within it: frame what of the read was parsed
        if self.transport.is_closing() or self._head is not None and self._head < 0:
            return
        self.data_received(data[room:])  # the rest is a body or the next request

    def _after(self, fed: bytes, ends: int) -> None:
        """After a read of a head was parsed, unless it held exactly one whole request: keep the head's
        reads while it goes on, hold every further head the read began to the bound, and follow a body
        that goes on past the read."""
        if self.transport.is_closing() or self._head is not None and self._head < 0:
            return
        self._left = None  # unless a body that goes on is followed below
        partial = self._partial
        if self._head is not None and self._head > 0 and self._ends == ends:  # one head going on
            if partial is None:
                self._partial = [fed]
            else:
                partial.append(fed)
            return
        self._partial = None
        buf = b"".join((*partial, fed)) if partial else fed
        framing = _Framing(buf)
        first = True
        try:
            while True:
                start = framing.pos
                end = framing.head_end()
                if end < 0:  # a head that goes on into the next read
                    if not first and self._head == 0:
                        self._head = len(buf) - start  # held to the bound from its first byte
                        self._partial = [buf[start:]]
                        if self._head > self._max_head:
                            self._refuse()
                    return
                if not first and end - start > self._max_head:
                    self._refuse()
                    return
                first = False
                if not framing.body(start, end):  # a body that goes on into later reads
                    if self._head is None:
                        self._left, self._chunk = framing.left, framing.chunk
                    return
                if framing.pos == len(buf):
                    return
        except ValueError:  # a length the parser took and Python does not (never seen): not followed
            return

    def _chunks(self, data: bytes) -> int:
        """Where in `data` the chunked body being read ends, or more than its length when it goes on (its
        framing kept for the next read)."""
        chunk = self._chunk
        try:
            end = chunk.feed(data, 0)
        except ValueError:  # not chunked framing: the parser refuses it (400) and closes
            end, self._left = len(data) + 1, None
        if chunk.trailers > self._max_head:  # trailers are header fields: held to the same bound
            self._refuse_trailers()
            return -1
        return len(data) + 1 if end < 0 else end

    # Called by the parser; the base methods are called directly (no super() on the hot path).
    def on_headers_complete(self) -> None:
        self._head = None
        _base.on_headers_complete(self)

    def on_message_complete(self) -> None:
        _base.on_message_complete(self)
        self._head = 0  # the next request on this connection starts its head
        self._ends += 1
        self._ended = self.scope  # a later request that began in the same read has its own scope

    def _refuse(self) -> None:
        self._head = -1
        self.parser = None  # type: ignore[assignment]  # nothing more is parsed (uvicorn drops it too when the connection is lost)
        log.warning("refused a request head over %d bytes (server.max_header_bytes)", self._max_head)
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            # Earlier pipelined requests are still being answered: they were accepted (and may be billed),
            # so their answers go first, in order; ours follows the last of them (on_response_complete).
            self._refusal_due = True
            self.flow.pause_reading()
            return
        self._answer_refusal()

    def _refuse_trailers(self) -> None:
        """A trailer section past the bound, while its request's body is read (llhttp hands every trailer to
        uvicorn, which keeps them all): the 431 at once when that request is the one being answered and
        nothing of its answer was written, else the connection closes (an earlier answer is being written,
        or the handler began its own); either way its handler is told the client left."""
        self._head = -1
        self.parser = None  # type: ignore[assignment]  # nothing more is parsed
        log.warning("refused a trailer section over %d bytes (server.max_header_bytes)", self._max_head)
        cycle = self.cycle
        if not self.pipeline and (cycle is None or not cycle.response_started):
            self._answer_refusal()
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        if self._refusal_due and not self.pipeline and not self.transport.is_closing():
            self.server_state.total_requests += 1
            self._refusal_due = False
            self.flow.resume_reading()  # what the client still sends is read and dropped until the close
            self._answer_refusal()
            return
        _base.on_response_complete(self)

    def _answer_refusal(self) -> None:
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
    # Never reached a route, so neither the access log nor the metrics see it: one line here, so the
    # x-request-id the client was given is in the log as docs/api.md says (rare: no fast path needed).
    log.info(
        "%s %s request_id=%s path=%s: answered before the request reached the gateway",
        status_line[:3].decode(),
        err.body.code,
        request_id.decode(),
        _shown(url),
    )
    family = family_of(url)
    body = family.error_body(err, request_id)
    # Each name the family's SDK reads the id from (the anthropic SDK: `request-id`), as a routed answer has.
    ids = b"".join(b"%s: %s\r\n" % (name, request_id) for name in family.request_id_headers)
    return b"".join(
        (
            b"HTTP/1.1 ",
            status_line,
            b"\r\ncontent-type: application/json\r\n",
            ids,
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        )
    )


_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_MAX_CHUNK = 1 << 64  # llhttp refuses a larger chunk size


class _Chunked:
    """Where a chunked body's framing stands, fed its bytes a read at a time: a state and two numbers, never
    bytes of an earlier read, so a chunk-size line or trailer section split across reads costs nothing more.
    Lenient where the parser is strict (it refuses what is malformed, and the connection closes)."""

    __slots__ = ("size", "skip", "state", "trailers")

    SIZE, EXT, SIZE_LF, DATA, LINE_START, LINE, END_LF = range(7)

    def __init__(self) -> None:
        self.state = self.SIZE
        self.size = 0  # the chunk size read so far
        self.skip = 0  # DATA: bytes of chunk data and its CRLF still to come
        self.trailers = 0  # bytes of the trailer section so far, its empty line included (held to the head's bound)

    def feed(self, buf: bytes, pos: int) -> int:
        """Follow `buf[pos:]`: where in `buf` the body ends (past its last CRLF), or -1 when it goes on."""
        n = len(buf)
        while pos < n:
            state = self.state
            if state == self.DATA:
                step = min(self.skip, n - pos)
                pos += step
                self.skip -= step
                if not self.skip:
                    self.state, self.size = self.SIZE, 0
            elif state == self.SIZE:
                c = buf[pos]
                pos += 1
                digit = _HEX.get(c)
                if digit is not None:
                    self.size = self.size * 16 + digit
                    if self.size >= _MAX_CHUNK:
                        raise ValueError("chunk size past 64 bits")
                elif c == 13:  # CR
                    self.state = self.SIZE_LF
                elif c == 10:
                    self._line_end()
                elif c in b"; \t":
                    self.state = self.EXT
                else:
                    raise ValueError("not a chunk-size line")
            elif state == self.EXT:  # a chunk extension: skipped to its line's end
                cr = buf.find(b"\r", pos)
                if cr < 0:
                    return -1
                pos, self.state = cr + 1, self.SIZE_LF
            elif state == self.SIZE_LF:
                if buf[pos] == 10:
                    pos += 1
                self._line_end()
            elif state == self.LINE_START:  # of a trailer, or the empty line that ends the body
                c = buf[pos]
                pos += 1
                self.trailers += 1
                if c == 10:
                    return self._done(pos)
                self.state = self.END_LF if c == 13 else self.LINE
            elif state == self.LINE:
                lf = buf.find(b"\n", pos)
                if lf < 0:
                    self.trailers += n - pos
                    return -1
                self.trailers += lf + 1 - pos
                pos, self.state = lf + 1, self.LINE_START
            else:  # END_LF
                self.trailers += 1
                return self._done(pos + 1 if buf[pos] == 10 else pos)
        return -1

    def _line_end(self) -> None:
        if self.size:
            self.state, self.skip = self.DATA, self.size + 2  # the chunk's data and its CRLF
        else:
            self.state, self.trailers = self.LINE_START, 0  # the last chunk: trailers, or the end

    def _done(self, pos: int) -> int:
        self.state, self.size, self.skip = self.SIZE, 0, 0  # ready for the next chunked body (`trailers`: this one's)
        return pos


class _Framing:
    """Where the requests in a run of bytes end (after the parser took them, so they are valid HTTP/1.1:
    lines end in CRLF, a head ends at its first CRLF CRLF, a body is `Content-Length` bytes or chunks).
    `pos` walks from one request to the next."""

    __slots__ = ("buf", "chunk", "left", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.left: int | None = None  # a body that goes on: as HeadLimitedProtocol._left
        self.chunk = _Chunked()

    def head_end(self) -> int:
        """The end of the head at `pos` (past its CRLF CRLF), or -1 when it goes on past the bytes. The
        empty lines a request may begin with are its own."""
        buf, pos = self.buf, self.pos
        n = len(buf)
        while pos < n and buf[pos] in b"\r\n":
            pos += 1
        end = buf.find(b"\r\n\r\n", pos)
        return -1 if end < 0 else end + 4

    def body(self, start: int, end: int) -> bool:
        """Move `pos` past the body of the head `buf[start:end]`: False when the body goes on past the
        bytes (`left` and `chunk` say how far)."""
        length = 0
        chunked = False
        for line in self.buf[start:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
        n = len(self.buf)
        if not chunked:
            self.pos = end + length
            if self.pos > n:
                self.left = self.pos - n
                return False
            return True
        self.chunk = _Chunked()
        done = self.chunk.feed(self.buf, end)
        if done < 0:
            self.left = -1
            return False
        self.pos = done
        return True


def _shown(url: bytes) -> str:
    """The request's path for a log line: no query string, at most 64 characters, control characters as `?`."""
    path = url.split(b"?", 1)[0][:64].decode("latin-1")
    return "".join(c if c.isprintable() else "?" for c in path) or "-"
