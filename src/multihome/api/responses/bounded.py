"""A conversation's bound at the API (state/bound.py): the 400 for an add of items or a turn that would pass
it, in OpenAI's error envelope, naming the limit and what to do. An add is refused by the store, in the
transaction that would add the items; a turn before any upstream call, from the totals read with its
context, and again by the store when its answer is appended (concurrent turns may have filled it meanwhile:
door.py `_keep`); its answer is appended whatever its size (an answer served is never lost)."""

from __future__ import annotations

import msgspec

from ...config.responses import ConversationsConfig
from ...schema.errors import ApiError, bad_request, echo, storage_quota_exceeded
from ...state import ItemPage
from ...state.bound import ConversationFull, over
from ...state.tenant_quota import TenantStorageFull
from .items import Item

_encode = msgspec.json.encode
_SETTING = {"items": "max_items", "bytes": "max_bytes"}


def too_large(full: ConversationFull, param: str, named: bool = True) -> ApiError:
    """The 400 for `full` (`named`: the conversation exists, so its id is repeated)."""
    which = f"Conversation '{echo(full.conversation_id)}'" if named else "The conversation"
    what = "items" if full.what == "items" else "bytes of items"
    return bad_request(
        f"{which} would hold {full.would:,} {what}; this gateway keeps at most {full.limit:,} {what} per "
        f"conversation (responses.conversations.{_SETTING[full.what]}). Delete items from it "
        "(DELETE /v1/conversations/{conversation_id}/items/{item_id}) or continue in a new conversation.",
        param=param,
        code="conversation_too_large",
    )


def tenant_full(full: TenantStorageFull) -> ApiError:
    """The 429 for a create or an add that would take the tenant past its conversations' limit."""
    what = "conversations" if full.what == "count" else "bytes in its conversations"
    setting = "max_conversations" if full.what == "count" else "max_bytes"
    return storage_quota_exceeded(
        f"This tenant would hold {full.would:,} {what}; this gateway keeps at most {full.limit:,} per tenant "
        f"(responses.conversations.per_tenant.{setting}). Delete conversations or items to make room "
        "(DELETE /v1/conversations/{conversation_id}), or ask the gateway's operator to raise the limit.",
        "conversation_quota_exceeded",
    )


def refuse_turn(bound: ConversationsConfig, conversation_id: str, page: ItemPage, new: list[Item], body: int) -> None:
    """A 400 if a turn's input `new` (from a request body of `body` bytes) would take the conversation read
    as `page` past its bound. Their stored size is counted (encoded) only near the bound: an item as stored
    is its JSON from the body plus an id and a status, so most turns are let through by this upper bound."""
    count = page.count + len(new)
    if over(bound, conversation_id, count, page.size + 2 * body + 512 * len(new)) is None:
        return
    full = over(bound, conversation_id, count, page.size + sum(len(_encode(item)) for item in new))
    if full is not None:
        raise too_large(full, "conversation")
