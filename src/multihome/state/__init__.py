"""The stateful runtime: stored responses, conversations and their items, sealed per tenant
under the organisation's KMS (docs/responses.md, docs/encryption.md). `StateStore` is the one way in."""

from __future__ import annotations

from .store import Conversation, ItemPage, StateStore, StoredResponse

__all__ = ["Conversation", "ItemPage", "StateStore", "StoredResponse"]
