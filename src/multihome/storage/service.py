"""The gateway's storage lifecycle: open the database, bring its schema to head, keep a snapshot
of it in memory (identity and policy read only that on the hot path)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from ..config import Config, env_secret
from .snapshot import Snapshot, SnapshotCache
from .store import Store, open_store

# A key (or a token's tenant) this replica has not seen may have just been created on another one: look once more,
# in a read that begins after the miss, but begin such reads at most this often, so a flood of made-up keys
# costs the database ~10 reads a second (each miss waits for the next one instead).
_MISS_REFRESH_S = 0.1
_NONE: Mapping[str | None, str] = {}


class StorageService:
    def __init__(self, config: Config) -> None:
        self.url = env_secret(config.storage.url_env, what="storage.url_env") or config.storage.url
        self._refresh_s = config.storage.refresh_s
        self.state_sync = config.storage.state_sync  # the state store's SQLite commits (state/service.py)
        self.store: Store | None = None
        self.snapshots: SnapshotCache | None = None
        self._last_miss_refresh = 0.0
        self._miss_refresh: asyncio.Task[None] | None = None  # the next read after misses, not begun yet
        # Tenant id -> why its calls are refused (a stored row of it cannot be read; None: every OIDC token),
        # the current snapshot's. Empty almost always: the Authenticator reads it on every managed-key or
        # token call, so it is an attribute set on each reload, not a property.
        self.refused: Mapping[str | None, str] = _NONE
        self.tokens_refused: frozenset[str | None] = frozenset()  # the snapshot's (identity's Refusals)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def lookup_key(self, presented: str):
        """Managed-key lookup for the Authenticator (None until started)."""
        return self.snapshots.keys.lookup(presented) if self.snapshots is not None else None

    def key_by_id(self, key_id: str):
        """A usable managed key by its id, for queued work that acts as it (None until started)."""
        return self.snapshots.keys.by_id(key_id) if self.snapshots is not None else None

    def known_tenants(self) -> Mapping[str, object]:
        """The stored tenants by id, for the OIDC verifier (empty until started: nobody's tenant is known).
        A tenant whose row cannot be read is known (its calls are refused by `refused`, by name)."""
        return self.snapshots.known_tenants if self.snapshots is not None else {}

    async def refresh_after_miss(self) -> bool:
        """Re-read the snapshot after an unknown key or tenant. True once a read that began after this call
        has finished: one that began earlier may predate what was just created elsewhere. Misses share the
        next read, which begins at once or when the rate limit allows."""
        if self.snapshots is None:
            return False
        task = self._miss_refresh
        if task is None:
            wait = self._last_miss_refresh + _MISS_REFRESH_S - time.monotonic()
            task = self._miss_refresh = asyncio.get_running_loop().create_task(self._read_after_misses(wait))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a waiter may have gone
        try:
            await asyncio.shield(task)
        except Exception:
            return False
        return True

    async def _read_after_misses(self, wait: float) -> None:
        if wait > 0:
            await asyncio.sleep(wait)
        self._miss_refresh = None  # a miss from now on needs a read begun after it: the next one
        self._last_miss_refresh = time.monotonic()
        assert self.snapshots is not None
        await self.snapshots.refresh()

    async def start(self) -> None:
        if self.url is None:  # not enabled
            return
        self.store = store = await open_store(self.url, migrate=True)
        self.snapshots = snapshots = SnapshotCache(store, interval_s=self._refresh_s, on_reload=self._took)
        await snapshots.start()

    def _took(self, snap: Snapshot) -> None:
        self.refused, self.tokens_refused = snap.refused, snap.tokens_refused

    async def refresh(self) -> None:
        if self.snapshots is not None:
            await self.snapshots.refresh()

    async def close(self) -> None:
        if self.snapshots is not None:
            await self.snapshots.stop()
        if self.store is not None:
            await self.store.close()
