"""Tiny ASGI helpers: read a bounded body, send JSON and errors. No framework on the hot path."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from ..schema.errors import ApiError
from ..schema.request_headers import header as header  # re-exported: the doors read headers through asgi
from ..schema.request_headers import single as single
from .big_bodies import OFF_LOOP_OVER, BigBodies

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

JSON = (b"content-type", b"application/json")

# Set in a call's scope when its client hung up before the answer began and the call's task was cancelled
# for it (api/head_limit.py): the gateway ends that call quietly, recorded as cancelled.
HUNG_UP = "multihome.hung_up"
# Set in a call's scope by its handler while a hang-up before the answer began may cancel it (a stateful call
# while its upstream call is in flight and nothing is stored yet: api/head_limit.py). The stateless model
# calls' paths are always so, without it.
CANCEL_ON_HANG_UP = "multihome.cancel_on_hang_up"
# Set when the client hung up (before the answer began; or, for a foreground agent run's stream, at any time):
# a call not cancelled for it then stops at a point of its own choosing (api/responses/agent.py).
CLIENT_LEFT = "multihome.client_left"


def client_gone(scope: Scope, task: asyncio.Task[Any]) -> None:
    """The client of `scope`'s call hung up: cancel the call's `task` if it said a hang-up may (CANCEL_ON_HANG_UP),
    else note it (CLIENT_LEFT) for the call to read where it can stop whole."""
    scope[CLIENT_LEFT] = True
    if scope.get(CANCEL_ON_HANG_UP):
        scope[HUNG_UP] = True
        task.cancel()


def hang_up_cancels(scope: Scope) -> None:
    """From here until its answer begins a hang-up cancels the call, and its upstream call with it, as a
    stateless call's does; a client that left already (while the call read its state, say) ends it now."""
    if scope.get(CLIENT_LEFT):
        scope[HUNG_UP] = True
        raise asyncio.CancelledError
    scope[CANCEL_ON_HANG_UP] = True


async def read_body(scope: Scope, receive: Receive, limit: int, bodies: BigBodies | None = None) -> bytes:
    """The request's body, at most `limit` bytes (else a 413). A body that came in several pieces is joined
    on `bodies`' thread when it is over OFF_LOOP_OVER: `bytes.join` lets go of the GIL for a large result,
    and joining 29 MiB of 64 KiB pieces held the event loop ~25 ms (most of it faulting in the new pages)."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number.", code="invalid_header") from None
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    if len(chunks) == 1:
        return chunks[0]
    if bodies is not None and size > OFF_LOOP_OVER:
        return await bodies.run(functools.partial(b"".join, chunks))
    return b"".join(chunks)


class ClientGone(Exception):
    """The client disconnected; there is nobody to answer."""


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"Request body is larger than the gateway's limit of {limit} bytes (server.max_body_bytes).",
        code="request_too_large",
    )


async def send_bytes(send: Send, status: int, body: bytes, headers: list[Header]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
