"""A conversation's bound (`responses.conversations`: items and their plaintext bytes) and the refusals a
write of its items can end in, decided in the write's own transaction (state/store.py `insert_items`).

Every turn of a conversation is rebuilt from all its items, so an unbounded one lets a tenant make each
turn cost more, and its storage grow, for ever. The totals are kept in the conversation's row (migration
0021), so checking costs one row read however long the conversation is."""

from __future__ import annotations

from ..config.responses import ConversationsConfig
from ..storage.errors import Refused

DEFAULT = ConversationsConfig()


class ConversationFull(Refused):
    """The items would take the conversation past its bound: `what` ("items" or "bytes"), the limit, and
    what it would hold."""

    def __init__(self, conversation_id: str, what: str, limit: int, would: int) -> None:
        super().__init__(f"conversation {conversation_id} would hold {would} {what}, over its {limit}")
        self.conversation_id, self.what, self.limit, self.would = conversation_id, what, limit, would


class ConversationChanged(Refused):
    """Items were added to the conversation after the caller read the ones it checked the new items
    against (a duplicate call_id, an orphan result): its check must be made again."""


def over(bound: ConversationsConfig, conversation_id: str, count: int, size: int) -> ConversationFull | None:
    """The refusal for a conversation that would hold `count` items of `size` bytes, if that passes `bound`."""
    if count > bound.max_items:
        return ConversationFull(conversation_id, "items", bound.max_items, count)
    if size > bound.max_bytes:
        return ConversationFull(conversation_id, "bytes", bound.max_bytes, size)
    return None
