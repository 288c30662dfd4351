"""Tiny ASGI helpers: read a bounded body, send JSON and errors. No framework on the hot path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..schema.errors import ApiError
from ..schema.request_headers import header as header  # re-exported: the doors read headers through asgi

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

JSON = (b"content-type", b"application/json")

# Set in a call's scope when its client hung up before the answer began and the call's task was cancelled
# for it (api/head_limit.py): the gateway ends that call quietly, recorded as cancelled.
HUNG_UP = "multihome.hung_up"


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
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
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
