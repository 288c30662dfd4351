"""A turn's items appended to its conversation, checked again in the append's transaction.

What a turn's input was checked against when it began (the conversation's bound; for a tool call or
result, the calls already there) may have changed while the model answered: another turn, an add of
items, a delete of an item. So the append is conditional (state/store.py `insert_items`): the input must
still fit the bound, and, for a turn whose input holds a call or a result, nothing may have been added or
deleted since its check (the conversation's end, which a delete moves on too), else its input is checked
again against what is there now. Foreground turns (door.py) and background runs (runner.py,
agent_job.py) both append through here, so both hold the bound and the pairing of calls and results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ...schema.errors import ApiError
from ...state import ItemPage, StateStore
from ...state.bound import ConversationChanged, ConversationFull
from ...state.pairs import CALL_ITEMS
from .bounded import too_large
from .common import stored
from .items import Item, refuse_duplicate_calls, refuse_orphans

T = TypeVar("T")
# A turn's input checked again when other items were added while it ran (each retry: another add committed).
_RECHECKS = 5


def checked_end(context: list[Item], new: list[Item], conversation: ItemPage | None) -> int | None:
    """A 400 if the input `new` holds a tool result whose call is not in `context`, or a call_id already
    there; for such an input, the conversation's end as read with `context` (None otherwise: nothing to
    check again at the append)."""
    for item in new:  # a loop, not any(): no generator made on every create
        if item["type"] in CALL_ITEMS:  # a tool call or its result: checked against the context
            refuse_orphans(context, new, "input")
            refuse_duplicate_calls(context, new, "input")
            return conversation.end if conversation is not None else None
    return None


async def append_turn(
    state: StateStore,
    tenant: str,
    conversation_id: str,
    new: list[Item],
    end: int | None,
    write: Callable[[int | None], Awaitable[T]],
) -> T:
    """`write(end)`: the store's append of the turn (its input `new` counted against the bound, `end` as
    `expect_end`), made again with the new end after each check of `new` against what was added meanwhile.
    Raises the 400 the check at the create would have given (too large, an orphan result, a duplicate
    call_id), a 409 `conversation_busy` after `_RECHECKS` changes, and LookupError when the conversation
    was deleted meanwhile (the caller keeps the answer without it)."""
    for _ in range(_RECHECKS):
        try:
            return await write(end)
        except ConversationFull as full:
            raise too_large(full, "conversation") from None
        except ConversationChanged:
            page = await stored(state.items(tenant, conversation_id))
            if page is None:
                raise LookupError(conversation_id) from None
            refuse_orphans(page.items, new, "input")
            refuse_duplicate_calls(page.items, new, "input")
            end = page.end
    raise ApiError(
        409,
        "Other items were added to the conversation while this turn's answer was stored, again and again; "
        "the turn was not stored. Retry the request.",
        param="conversation",
        code="conversation_busy",
    )
