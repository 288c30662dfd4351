"""What one tenant keeps in its conversations (`responses.conversations.per_tenant`) and its memory
(`memory.per_tenant`), docs/responses.md "A tenant's conversations" and docs/memory.md "A tenant's memory":
creating conversations and adding items cost no upstream call, nor do memory records with the offline
embedding model, so no budget holds them, and without this one key could fill the database every tenant
shares.

Each replica reads a tenant's totals (one aggregate over the tenant's rows, which carry their plaintext
bytes) at its first write and then at most every `refresh_s`, adds what it writes itself at once, and
forgets them on a delete (read again at the next write, so a delete frees room at once here). An exact count
across replicas would need one row every write of the tenant locks, serialising them all; so the replicas
together can pass a limit by what the others wrote since their last reading."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ..storage.errors import Refused

_MAX_TENANTS = 10_000  # readings kept; past it all are dropped (each is read again at its next write)

# (the most items, the most bytes) of a tenant; None: no limit
Limits = tuple[int | None, int | None]


class TenantStorageFull(Refused):
    """The write would take the tenant past `limit` of `what` ("count" or "bytes"): it would hold `would`."""

    def __init__(self, tenant: str, what: str, limit: int, would: int) -> None:
        super().__init__(f"tenant {tenant} would hold {would} ({what}), over its {limit}")
        self.tenant, self.what, self.limit, self.would = tenant, what, limit, would


class TenantQuota:
    def __init__(
        self,
        limits: Callable[[str], Limits],
        read: Callable[[str], Awaitable[tuple[int, int]]],
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits, self._read, self._refresh_s, self._clock = limits, read, refresh_s, clock
        self._totals: dict[str, list] = {}  # tenant -> [count, bytes, read at]
        self._reading: dict[str, asyncio.Future] = {}

    async def admit(self, tenant: str, count: int, nbytes: int) -> None:
        """Raises TenantStorageFull if `count` more items of `nbytes` would pass the tenant's limits."""
        max_count, max_bytes = self._limits(tenant)
        if max_count is None and max_bytes is None:
            return
        held, size = await self._now(tenant)
        if max_count is not None and count and held + count > max_count:
            raise TenantStorageFull(tenant, "count", max_count, held + count)
        if max_bytes is not None and size + nbytes > max_bytes:
            raise TenantStorageFull(tenant, "bytes", max_bytes, size + nbytes)

    def added(self, tenant: str, count: int, nbytes: int) -> None:
        """This replica committed a write the last reading does not hold."""
        entry = self._totals.get(tenant)
        if entry is not None:
            entry[0] += count
            entry[1] += nbytes

    def forget(self, tenant: str | None = None) -> None:
        """Something of the tenant's (None: of any tenant) was deleted: read again at its next write."""
        if tenant is None:
            self._totals.clear()
        else:
            self._totals.pop(tenant, None)

    async def _now(self, tenant: str) -> tuple[int, int]:
        entry = self._totals.get(tenant)
        if entry is not None and self._clock() - entry[2] < self._refresh_s:
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
