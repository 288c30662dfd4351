"""`Idempotency-Key` on a stateful create: a retry of the same request (on any replica) gets the
original answer, or a 409 while it runs, instead of a second response made and billed.

Only requests that carry the header come here (the door checks for it: no database round trip on
the others). The key is claimed in the database (state/idempotency.py) with a digest of the body; the
create runs holding the key, so the write that stores its object (a row of `table`) marks the key done
in the same transaction (a replica killed right after that commit leaves no pending key behind, and
the retry is answered with that object). A `store: false` create with no conversation stores no object: it
keeps its answer in the key's row instead, marking the key done before the answer is sent (door.py
`_keep`, state/idempotency.py `keep`), and a retry is answered with those bytes. The create's answer's
status and first bytes are watched, and the key is then marked done (if nothing marked it yet) with
the id of what it made (the first `"id"` of the answer: a unary body's, the stream's
`response.created` event's, an item list's first item's), or forgotten if the create failed (4xx, 5xx, or an error before any
answer), so the retry runs again. A retry of a done key gets the stored object, read now (so a
background response shows its current status) when `replay` can give it, else a 409 naming it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ...schema.errors import ApiError, bad_request, no_retry
from ...state.idempotency import DONE, IN_PROGRESS, MAX_KEY, NEW, IdempotencyKeys, digest, holding
from ..asgi import JSON, Message, Receive, Send, read_body
from ..pipeline import Call
from ..render import send_json
from .common import stored, tenant

log = logging.getLogger("multihome.responses")
HEADER = b"idempotency-key"
_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')  # the first id: the object's (a list's first item's)
_WATCH = 4096  # the id is in the first bytes of the answer


def key_of(raw: bytes) -> str:
    try:
        key = raw.decode("ascii")
    except UnicodeDecodeError:
        key = ""
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise bad_request(f"The Idempotency-Key header must be 1 to {MAX_KEY} printable ASCII characters.")
    return key


def one_key(headers: list[tuple[bytes, bytes]]) -> None:
    """Two Idempotency-Key headers with different values are a 400: whichever the gateway took, a retry
    sending them in another order (or a proxy that reorders them) would be a second create."""
    values = {value for name, value in headers if name == HEADER}
    if len(values) > 1:
        raise bad_request(
            "The request has more than one 'Idempotency-Key' header, with different values. Send one "
            "Idempotency-Key header with one key.",
            param="idempotency-key",
            code="duplicate_idempotency_key",
        )


async def once(
    call: Call,
    receive: Receive,
    send: Send,
    keys: IdempotencyKeys,
    raw_key: bytes,
    endpoint: str,
    table: str,
    max_body: int,
    create: Callable[[Call, Receive, Send], Awaitable[None]],
    replay: Callable[[Call, bytes, str], Awaitable[Any | None]],
) -> None:
    """Run `create` once per (tenant, key); `replay(call, body, object_id)`: the object to answer a retry with.
    `table`: the table whose new row is what `create` makes (its write marks the key done)."""
    one_key(call.scope["headers"])
    key = key_of(raw_key)
    body = await read_body(call.scope, receive, max_body)
    who = tenant(call)
    claim = await stored(keys.claim(who, key, endpoint, digest(endpoint, body)))
    if claim.outcome == IN_PROGRESS:
        raise ApiError(
            409,
            "A request with this Idempotency-Key is still in progress; retry later.",
            code="idempotency_key_in_use",
        )
    if claim.outcome == DONE:
        out = await stored(keys.opened(who, key, claim))  # a `store: false` answer, kept with its key
        if out is None:
            found = await replay(call, body, claim.object_id) if claim.object_id else None
            if found is None:
                raise ApiError(
                    409,
                    f"A request with this Idempotency-Key already completed (it created '{claim.object_id}'), "
                    "and its answer cannot be replayed (streamed, or not kept); retrieve it, or use a new key.",
                    code="idempotency_key_used",
                    headers=no_retry(),  # a retry with this key gets this 409 again (an in-progress one is retried)
                )
            out = msgspec.json.encode(found)
        headers = [JSON, (b"x-request-id", call.request_id), (b"idempotent-replayed", b"true")]
        await send_json(call, send, 200, out, headers)
        return
    if claim.outcome != NEW:
        raise ApiError(
            422,
            "This Idempotency-Key was already used with a different request; use a new key for a new request.",
            code="idempotency_key_reused",
        )
    sent = False

    async def replayed_body() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    status = 0
    head = bytearray()

    async def watched(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and len(head) < _WATCH:
            head.extend(message.get("body", b"")[:_WATCH])
        await send(message)

    try:
        with holding(who, key, table):
            await create(call, replayed_body, watched)
    finally:
        found = _ID.search(head) if 200 <= status < 300 else None
        try:
            if found is not None:
                await keys.done(who, key, status, found.group(1).decode())
            else:
                await keys.release(who, key)
        except Exception as exc:  # the answer stands; the key stays pending until `locked_until`
            log.warning("Idempotency-Key of %s not recorded (%s)", call.request_id, exc)


__all__ = ["HEADER", "key_of", "once", "one_key"]
