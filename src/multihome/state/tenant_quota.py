"""What one tenant keeps in its conversations (`responses.conversations.per_tenant`, docs/responses.md "A
tenant's conversations"): creating a conversation and adding items to one cost no upstream call, so no budget
holds them, and without this one key could fill the database every tenant shares.

Each replica reads a tenant's totals (one aggregate over its conversations' rows, which carry their items'
bytes) at most every `per_tenant_refresh_s`, adds what it writes itself at once, and forgets them on a
delete (read again at the next write, so a delete frees room at once here). An exact count across replicas
would need one row every write of the tenant locks, serialising them all; so the replicas together can pass
the limit by what the others wrote since their last reading."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ..config.responses import ConversationsConfig, TenantConversations
from ..storage.errors import Refused

_MAX_TENANTS = 10_000  # readings kept; past it all are dropped (each is read again at its next write)


class TenantStorageFull(Refused):
    """The write would take the tenant past `limit` ("conversations" or "bytes"): it would hold `would`."""

    def __init__(self, tenant: str, what: str, limit: int, would: int) -> None:
        super().__init__(f"tenant {tenant} would hold {would} {what} in its conversations, over its {limit}")
        self.tenant, self.what, self.limit, self.would = tenant, what, limit, would


class TenantQuota:
    def __init__(
        self,
        cfg: ConversationsConfig,
        read: Callable[[str], Awaitable[tuple[int, int]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg, self._read, self._clock = cfg, read, clock
        self._totals: dict[str, list] = {}  # tenant -> [conversations, bytes, read at]
        self._reading: dict[str, asyncio.Future] = {}

    def limits(self, tenant: str) -> TenantConversations:
        return self._cfg.tenants.get(tenant, self._cfg.per_tenant)

    async def admit(self, tenant: str, conversations: int, nbytes: int) -> None:
        """Raises TenantStorageFull if `conversations` more of `nbytes` would pass the tenant's limits."""
        limits = self.limits(tenant)
        if limits.max_conversations is None and limits.max_bytes is None:
            return
        count, size = await self._now(tenant)
        if limits.max_conversations is not None and conversations and count + conversations > limits.max_conversations:
            raise TenantStorageFull(tenant, "conversations", limits.max_conversations, count + conversations)
        if limits.max_bytes is not None and size + nbytes > limits.max_bytes:
            raise TenantStorageFull(tenant, "bytes", limits.max_bytes, size + nbytes)

    def added(self, tenant: str, conversations: int, nbytes: int) -> None:
        """This replica committed a write the last reading does not hold."""
        entry = self._totals.get(tenant)
        if entry is not None:
            entry[0] += conversations
            entry[1] += nbytes

    def forget(self, tenant: str) -> None:
        """Something of the tenant's was deleted: read its totals again at its next write."""
        self._totals.pop(tenant, None)

    async def _now(self, tenant: str) -> tuple[int, int]:
        entry = self._totals.get(tenant)
        if entry is not None and self._clock() - entry[2] < self._cfg.per_tenant_refresh_s:
            return entry[0], entry[1]
        reading = self._reading.get(tenant)
        if reading is None:  # one read per tenant at a time; the writes meanwhile wait for it
            reading = self._reading[tenant] = asyncio.ensure_future(self._fetch(tenant))
            reading.add_done_callback(lambda _: self._reading.pop(tenant, None))
        return await asyncio.shield(reading)

    async def _fetch(self, tenant: str) -> tuple[int, int]:
        at = self._clock()
        count, size = await self._read(tenant)
        if len(self._totals) >= _MAX_TENANTS:
            self._totals.clear()
        self._totals[tenant] = [count, size, at]
        return count, size
