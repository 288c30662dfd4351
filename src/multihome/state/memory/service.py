"""The memory store's lifecycle in the gateway: built once the database and the keyring are open
(after the state service, storage/service.py and crypto/service.py), and a sweeper that deletes
records whose TTL has passed, on every replica (each sweep deletes a batch in its own transactions,
so replicas sweeping at once only share the work)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ...config.memory import MemoryConfig
from ...outage_log import OutageLog
from ...storage.errors import outage
from .embedder import Routed, WordLlamaEmbedder
from .store import MemoryStore

log = logging.getLogger(__name__)
SWEEP_INTERVAL_S = 60.0


class MemoryService:
    def __init__(
        self,
        storage: Any,
        keyring: Any,
        *,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        routed: Routed | None = None,
        prefix: bool = False,
        limits: MemoryConfig | None = None,
    ) -> None:
        self._storage = storage
        self._limits = limits if limits is not None else MemoryConfig()  # a tenant's records at most
        self._routed = routed  # memory.embeddings.model: new namespaces embedded by a routed deployment
        self._prefix = (
            prefix  # memory.embeddings.matryoshka  # StorageService: its store (and engine) exist once it has started
        )
        self._keyring = keyring  # the gateway's Keyring, or a stand-in resolving to it once started
        self._interval = sweep_interval_s
        self.store: MemoryStore | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.store = MemoryStore(
            self._storage.store.engine,
            self._keyring,
            WordLlamaEmbedder,
            routed=self._routed,
            prefix=self._prefix,
            limits=self._limits,
        )
        self._sweeper = asyncio.create_task(self._sweep_forever(self.store), name="memory-sweeper")

    async def _sweep_forever(self, store: MemoryStore) -> None:
        failing = OutageLog(log, "memory TTL sweep failed", recovered="memory TTL sweep done again")
        while True:
            await asyncio.sleep(self._interval)
            try:
                swept = await store.sweep()
                while swept > 0:  # a backlog goes in batches, one after the other
                    swept = await store.sweep()
            except Exception as exc:  # a failed sweep is retried at the next interval; the records are kept until then
                failing.failed(exc, traceback=outage(exc) is None)
            else:
                failing.ok()

    async def close(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        store, self.store = self.store, None
        if store is not None:
            await store.close()  # its SQLite reader thread
