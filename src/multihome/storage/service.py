"""The gateway's storage lifecycle: open the database, bring its schema to head, keep a snapshot
of it in memory (identity and policy read only that on the hot path)."""

from __future__ import annotations

import asyncio
import time

from ..config import Config, env_secret
from .snapshot import SnapshotCache
from .store import Store, open_store

# A key (or a token's tenant) this replica has not seen may have just been created on another one: look once more,
# but re-read the database at most this often, so a flood of made-up keys costs nothing.
_MISS_REFRESH_S = 0.1


class StorageService:
    def __init__(self, config: Config) -> None:
        self.url = env_secret(config.storage.url_env, what="storage.url_env") or config.storage.url
        self._refresh_s = config.storage.refresh_s
        self.state_sync = config.storage.state_sync  # the state store's SQLite commits (state/service.py)
        self.store: Store | None = None
        self.snapshots: SnapshotCache | None = None
        self._last_miss_refresh = 0.0
        self._miss_refresh: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def lookup_key(self, presented: str):
        """Managed-key lookup for the Authenticator (None until started)."""
        return self.snapshots.keys.lookup(presented) if self.snapshots is not None else None

    def known_tenants(self):
        """The stored tenants by id, for the OIDC verifier (empty until started: nobody's tenant is known)."""
        try:
            return self.snapshots.snapshot.tenants if self.snapshots is not None else {}
        except RuntimeError:  # the first snapshot is still loading
            return {}

    async def refresh_after_miss(self) -> bool:
        """Re-read the snapshot after an unknown key or tenant (single-flight, rate-limited). True if it did."""
        if self.snapshots is None:
            return False
        if self._miss_refresh is None:
            if time.monotonic() - self._last_miss_refresh < _MISS_REFRESH_S:
                return False
            self._last_miss_refresh = time.monotonic()
            self._miss_refresh = asyncio.get_running_loop().create_task(self.snapshots.refresh())
            self._miss_refresh.add_done_callback(lambda _: setattr(self, "_miss_refresh", None))
        try:
            await asyncio.shield(self._miss_refresh)
        except Exception:
            return False
        return True

    async def start(self) -> None:
        if self.url is None:  # not enabled
            return
        self.store = store = await open_store(self.url, migrate=True)
        self.snapshots = snapshots = SnapshotCache(store, interval_s=self._refresh_s)
        await snapshots.start()

    async def refresh(self) -> None:
        if self.snapshots is not None:
            await self.snapshots.refresh()

    async def close(self) -> None:
        if self.snapshots is not None:
            await self.snapshots.stop()
        if self.store is not None:
            await self.store.close()
