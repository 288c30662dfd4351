"""`/v1/conversations`: create, retrieve, update (metadata), delete a conversation, and list, add,
retrieve and delete its items. A response created with `conversation` appends its turn here
(door.py). Everything names the caller's tenant: another tenant's conversation is not found (404)."""

from __future__ import annotations

from typing import Any

from ...schema.errors import ApiError, bad_request, echo
from ...schema.responses import MAX_ITEM_ID, parse_add_items, parse_create_conversation, parse_update_conversation
from ...state import Conversation, StateStore
from ...state.bound import ConversationChanged, ConversationFull
from ...state.idempotency import IdempotencyKeys
from ...state.pairs import CALL_ITEMS
from ...state.store import UnknownItem
from ...state.tenant_quota import TenantStorageFull
from ..asgi import Receive, Send, header, read_body
from ..pipeline import Call, Pipeline
from .bounded import tenant_full, too_large
from .common import (
    answer,
    checked_include,
    list_query,
    need_state,
    page,
    segments,
    stored,
    tenant,
    unknown_cursor,
)
from .door import MAX_ID, conversation_not_found
from .idempotent import HEADER as IDEMPOTENCY_KEY
from .idempotent import once
from .items import new_id, refuse_duplicate_calls, refuse_orphans, stored_item
from .thinking import ThinkingKeys

# Checks of new call items against the stored ones made again when another add came in between (each
# retry means another add committed): then a 409 asking the client to retry.
_RECHECKS = 5


def _view(conv: Conversation) -> dict[str, Any]:
    return {
        "id": conv.id,
        "object": "conversation",
        "created_at": int(conv.created_at.timestamp()),
        "metadata": conv.metadata,
    }


async def _no_replay(call: Call, body: bytes, object_id: str) -> None:
    return None


class ConversationsDoor:
    def __init__(self, pipeline: Pipeline, state: StateStore | None) -> None:
        self.max_body = pipeline.max_body
        self._bodies = pipeline.bodies  # a large body is parsed on the pool, as the model doors' are
        self._state = state
        self._keys: IdempotencyKeys | None = None
        self._thinking = ThinkingKeys(lambda: state.keyring) if state is not None else None

    def _idempotent(self, call: Call) -> tuple[IdempotencyKeys, bytes] | None:
        """With an Idempotency-Key (and a database): the key store and the key (idempotent.py)."""
        key = header(call.scope, IDEMPOTENCY_KEY)
        if key is None or self._state is None:
            return None
        if self._keys is None:
            self._keys = IdempotencyKeys(self._state.engine)
        return self._keys, key

    def _ids(self, call: Call) -> tuple[StateStore, str, str]:
        """The store, the caller's tenant and the conversation id of the path (404 for an id never issued)."""
        state = need_state(self._state, "The Conversations API")
        conv = segments(call)[1]
        if len(conv) > MAX_ID:
            raise conversation_not_found(conv)
        return state, tenant(call), conv

    async def _check_thinking(self, who: str, items: list[dict[str, Any]]) -> None:
        """Thinking blobs (thinking.py) must be this tenant's: refused here, not at every later turn."""
        if self._thinking is not None:
            await self._thinking.of(who).open(items, "items")

    async def create(self, call: Call, receive: Receive, send: Send) -> None:
        keyed = self._idempotent(call)
        if keyed is not None:
            await once(
                call,
                receive,
                send,
                *keyed,
                "conversations",
                "conversations",
                self.max_body,
                self._create,
                self._replay,
                self._bodies,
            )
            return
        await self._create(call, receive, send)

    async def _replay(self, call: Call, body: bytes, conv_id: str) -> dict[str, Any] | None:
        assert self._state is not None
        conv = await stored(self._state.get_conversation(tenant(call), conv_id))
        return None if conv is None else _view(conv)

    async def _create(self, call: Call, receive: Receive, send: Send) -> None:
        state = need_state(self._state, "The Conversations API")
        req = await self._bodies.decode(
            parse_create_conversation, await read_body(call.scope, receive, self.max_body, self._bodies)
        )
        items = [stored_item(i) for i in req.items or ()]
        refuse_orphans([], items, "items")
        refuse_duplicate_calls([], items, "items")
        await self._check_thinking(tenant(call), items)
        try:
            conv = await stored(state.create_conversation(tenant(call), new_id("conv"), req.metadata or {}, items))
        except ConversationFull as full:
            raise too_large(full, "items", named=False) from None
        except TenantStorageFull as full:
            raise tenant_full(full) from None
        await answer(call, send, _view(conv))

    async def retrieve(self, call: Call, receive: Receive, send: Send) -> None:
        state, who, conv_id = self._ids(call)
        conv = await stored(state.get_conversation(who, conv_id))
        if conv is None:
            raise conversation_not_found(conv_id)
        await answer(call, send, _view(conv))

    async def update(self, call: Call, receive: Receive, send: Send) -> None:
        state, who, conv_id = self._ids(call)
        req = await self._bodies.decode(
            parse_update_conversation, await read_body(call.scope, receive, self.max_body, self._bodies)
        )
        conv = await stored(state.update_conversation(who, conv_id, req.metadata or {}))  # null clears it
        if conv is None:
            raise conversation_not_found(conv_id)
        await answer(call, send, _view(conv))

    async def delete(self, call: Call, receive: Receive, send: Send) -> None:
        state, who, conv_id = self._ids(call)
        if not await stored(state.delete_conversation(who, conv_id)):
            raise conversation_not_found(conv_id)
        await answer(call, send, {"id": conv_id, "object": "conversation.deleted", "deleted": True})

    async def list_items(self, call: Call, receive: Receive, send: Send) -> None:
        state, who, conv_id = self._ids(call)
        query = list_query(call, include=True)
        if query.before is not None:  # the items' pages go forward only (as the SDK pages them)
            raise bad_request(
                "'before' is not supported when listing a conversation's items: page with 'after'.",
                param="before",
                code="unsupported_parameter",
            )
        try:
            found = await stored(state.items(who, conv_id, after=query.after, limit=query.limit, desc=query.desc))
        except UnknownItem:
            assert query.after is not None
            raise unknown_cursor(query.after, "after") from None
        if found is None:
            raise conversation_not_found(conv_id)
        await answer(call, send, page(found.items, found.has_more))

    async def add_items(self, call: Call, receive: Receive, send: Send) -> None:
        keyed = self._idempotent(call)
        if keyed is not None:  # a retry is told which items the first one added (409), never adds them twice
            endpoint = f"conversation_items {segments(call)[1][:MAX_ID]}"
            await once(
                call,
                receive,
                send,
                *keyed,
                endpoint,
                "conversation_items",
                self.max_body,
                self._add_items,
                _no_replay,
                self._bodies,
            )
            return
        await self._add_items(call, receive, send)

    async def _add_items(self, call: Call, receive: Receive, send: Send) -> None:
        state, who, conv_id = self._ids(call)
        checked_include(call)
        req = await self._bodies.decode(
            parse_add_items, await read_body(call.scope, receive, self.max_body, self._bodies)
        )
        items = [stored_item(i) for i in req.items]
        await self._check_thinking(who, items)
        refuse_duplicate_calls([], items, "items")
        checked = any(i.get("type") in CALL_ITEMS for i in items)
        for _ in range(_RECHECKS):
            end = None
            # A call or a result: does it answer a call stored before, or repeat one's call_id? (read only then,
            # and added only if nothing was added since: two adds of one call_id never both pass)
            if checked:
                found = await stored(state.items(who, conv_id))
                if found is None:
                    raise conversation_not_found(conv_id)
                refuse_orphans(found.items, items, "items")
                refuse_duplicate_calls(found.items, items, "items")
                end = found.end
            try:
                added = await stored(state.append_items(who, conv_id, items, expect_end=end))
            except ConversationChanged:
                continue
            except ConversationFull as full:
                raise too_large(full, "items") from None
            except TenantStorageFull as full:
                raise tenant_full(full) from None
            if not added:
                raise conversation_not_found(conv_id)
            await answer(call, send, page(items, False))
            return
        raise ApiError(
            409,
            "Other items were added to the conversation while these were checked against it, again and again; "
            "retry the request.",
            param="items",
            code="conversation_busy",
        )

    async def get_item(self, call: Call, receive: Receive, send: Send) -> None:
        state, who, conv_id = self._ids(call)
        checked_include(call)
        item_id = segments(call)[3]
        item = await stored(state.get_item(who, conv_id, item_id)) if len(item_id) <= MAX_ITEM_ID else None
        if item is None:
            await self._require(state, who, conv_id)
            raise ApiError(404, f"Item with id '{echo(item_id)}' not found.", param="item_id")
        await answer(call, send, item)

    async def delete_item(self, call: Call, receive: Receive, send: Send) -> None:
        """Answers with the conversation, as OpenAI does."""
        state, who, conv_id = self._ids(call)
        item_id = segments(call)[3]
        if len(item_id) > MAX_ITEM_ID or not await stored(state.delete_item(who, conv_id, item_id)):
            await self._require(state, who, conv_id)
            raise ApiError(404, f"Item with id '{echo(item_id)}' not found.", param="item_id")
        conv = await self._require(state, who, conv_id)
        await answer(call, send, _view(conv))

    async def _require(self, state: StateStore, who: str, conv_id: str) -> Conversation:
        conv = await stored(state.get_conversation(who, conv_id))
        if conv is None:
            raise conversation_not_found(conv_id)
        return conv
