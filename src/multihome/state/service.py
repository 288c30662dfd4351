"""The state store's lifecycle in the gateway: built once the database and the gateway's keyring are
open (storage/service.py, crypto/service.py, started before it), with that keyring sealing what it keeps.
The keyring is the gateway's, so this service neither opens nor closes one."""

from __future__ import annotations

from typing import Any

from ..config.responses import ConversationsConfig
from .bound import DEFAULT
from .store import StateStore


class StateService:
    def __init__(self, storage: Any, keyring: Any, conversations: ConversationsConfig = DEFAULT) -> None:
        self._storage = storage  # StorageService: its store (and engine) exist once it has started
        self._keyring = keyring  # the gateway's Keyring, or a stand-in resolving to it once started
        self._conversations = conversations  # a conversation's bound (state/bound.py)
        self.store: StateStore | None = None

    async def start(self) -> None:
        self.store = StateStore(
            self._storage.store.engine,
            self._keyring,
            sqlite_sync=getattr(self._storage, "state_sync", "full"),
            conversations=self._conversations,
        )

    async def close(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            await store.close()  # queued writes commit first (the SQLite writer thread)
