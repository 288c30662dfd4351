"""Sending an answer, for every front door: the `x-multihome-*` headers that say what served a
call, a JSON body, an SSE stream relayed chunk by chunk, and an error in the door's envelope.

Each send notes the status on the `Call` (the access log reads it) and a stream registers its
relay there, so a graceful stop can end it with an error event (api/drain.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..accounting.capture import TeeDigest
from ..routing.attempts import Served, attempts_header
from ..schema import header_text
from ..schema.errors import ApiError
from .asgi import JSON, Header, Receive, Send, send_bytes

if TYPE_CHECKING:
    from ..routing.stream_relay import StreamRelay
    from .pipeline import Call, StreamDone


@dataclass(frozen=True, slots=True)
class Family:
    """An API family (OpenAI, Anthropic): its error envelope, and what it says to a caller with no key.
    One instance per family, beside its envelope: api/openai/errors.py, api/anthropic/errors.py."""

    name: str
    error_body: Callable[[ApiError, bytes], bytes]  # (error, request id) -> the envelope's bytes
    # Makes the error raised before identify when the call carries no credential at all: a new one per call (an
    # instance raised again keeps every frame it passed through, identity/authenticator.py `_missing`).
    missing_key: Callable[[], ApiError] | None = None
    # The headers an answer names its request id in: the family's SDK reads its own (the anthropic SDK
    # `request-id`, into `message._request_id` and its errors' `request_id`); `x-request-id` on every answer.
    request_id_headers: tuple[bytes, ...] = (b"x-request-id",)


_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def served_headers(request_id: bytes, served: Served) -> list[Header]:
    headers = [
        (b"x-request-id", request_id),
        (b"x-multihome-deployment", served.deployment.name_header),
        (b"x-multihome-attempts", attempts_header(served.attempts).encode()),
    ]
    if served.dropped:
        # Parameters the serving provider cannot honour; the adapter dropped them (docs/translation.md).
        # Unknown fields are named by the client: encoded, so no name can break the response head.
        headers.append((b"x-multihome-dropped-params", header_text.names(served.dropped).encode()))
    return headers


async def send_json(call: Call, send: Send, status: int, body: bytes, headers: list[Header]) -> None:
    """A JSON answer (`headers` carries the content type)."""
    call.status = status
    headers.append((b"content-length", str(len(body)).encode()))  # send_bytes, inline: one coroutine less
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_failure(
    call: Call, send: Send, family: Family, err: ApiError, headers: list[Header] | None = None
) -> None:
    """An error in the family's envelope, with its own headers (`allow`, `retry-after`) after `headers`,
    which default to the call's request id alone."""
    call.status = err.status
    head = [
        JSON,
        *(headers if headers is not None else [(name, call.request_id) for name in family.request_id_headers]),
    ]
    head += [(k.encode(), v.encode()) for k, v in err.headers.items()]
    await send_bytes(send, err.status, family.error_body(err, call.request_id), head)


async def send_stream(
    call: Call, receive: Receive, send: Send, served: Served, headers: list[Header], on_done: StreamDone | None = None
) -> None:
    """Relay `served.stream` as SSE, chunk by chunk; a client that disconnects cancels it.
    `on_done(outcome, digest, first_byte_ms)` is told how it ended (it accounts the call): before the
    last event is sent when the stream ran to its end (outcome "ok" then, even if the client leaves
    during that last send), else once it is over."""
    relay = served.stream
    assert relay is not None
    call.stream, call.status = relay, 200
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.Event()
    digest: Any = None
    timed = on_done is not None  # the first byte's time is for the call's record
    if timed:
        tracker = call.tracker
        capture = tracker.capture if tracker is not None else None
        if capture is not None:  # a call with content capture on keeps what it sends (accounting/capture.py)
            digest = TeeDigest(capture)
        elif tracker is None or tracker.request_sha256:
            # Hashed as the request was: only when something reads the hashes (accounting/tracker.py).
            digest = hashlib.sha256()
    outcome, first_byte_ms, t0 = "cancelled", None, time.perf_counter()
    accounted = False  # on_done already told, before the last event went out

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                task.cancel()
                return

    watcher = asyncio.create_task(watch_disconnect())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *headers]})
        held: bytes | None = None
        async for piece in _pieces(served.first, relay):
            if held is not None:
                await send({"type": "http.response.body", "body": held, "more_body": True})
            held = None
            if digest is not None:
                digest.update(piece)
            if relay.done or relay.error:
                # The upstream has ended, so this may be the last event ([DONE], message_stop, the
                # terminal response event; or the whole answer, come in the first read): hold it until
                # the next one or the end, which no upstream read delays, so the call is accounted
                # before the client has its last byte.
                held = piece
                continue
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if timed and first_byte_ms is None:
                first_byte_ms = (time.perf_counter() - t0) * 1000
        if held is not None:
            if timed and first_byte_ms is None:
                first_byte_ms = (time.perf_counter() - t0) * 1000
            if on_done is not None:
                # Its usage row is on local disk before the client can have the last event (metering/spool.py).
                accounted = True
                on_done("ok", digest, first_byte_ms)
            await send({"type": "http.response.body", "body": held, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        outcome = "ok"
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        task.uncancel()
    except OSError:
        pass  # the client went away while we were writing
    finally:
        watcher.cancel()
        relay.close()
        if on_done is not None and not accounted:
            on_done(outcome, digest, first_byte_ms)


async def _pieces(first: bytes, relay: StreamRelay) -> AsyncIterator[bytes]:
    """The stream's first bytes (read while routing, before the answer started), then the rest."""
    yield first
    async for piece in relay.rest():
        yield piece
