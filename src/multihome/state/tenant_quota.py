"""What one tenant keeps in its conversations (`responses.conversations.per_tenant`) and its memory
(`memory.per_tenant`), docs/responses.md "A tenant's conversations" and docs/memory.md "A tenant's memory":
creating conversations and adding items cost no upstream call, nor do memory records with the offline
embedding model, so no budget holds them, and without this one key could fill the database every tenant
shares.

Each replica reads a tenant's totals (one aggregate over the tenant's rows, which carry their plaintext
bytes) at its first write and then at most every `refresh_s`. Between readings it counts its own writes:
one admitted holds its room until it ends (so concurrent writes on one replica cannot pass the limit
together), one committed is added; a delete that knows what it freed subtracts it (a delete frees room at
once here, and a tenant deleting and writing in turn costs no aggregate each write); one that does not
(a memory sweep) has the totals read again at the next write. A write that commits while the totals
are being read is added to the reading (counted twice until the next one if the reading saw it: never
under); a delete meanwhile has that reading used once and read again at the next write. An exact count across replicas
would need one row every write of the tenant locks, serialising them all; so the replicas together can
pass a limit by what the others wrote since their last reading."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

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
        # tenant -> [count, bytes] committed since its reading began (absent: a delete, the reading is not kept)
        self._during: dict[str, list[int]] = {}
        self._holding: dict[str, list[int]] = {}  # tenant -> [count, bytes] of its writes admitted, not ended

    @contextlib.asynccontextmanager
    async def holding(self, tenant: str, count: int, nbytes: int) -> AsyncIterator[None]:
        """Admits a write of `count` items of `nbytes` (TenantStorageFull if it would pass the tenant's
        limits) and holds its room until the block ends; the block calls `added` once it committed."""
        if not await self._admit(tenant, count, nbytes):
            yield
            return
        held = self._holding.setdefault(tenant, [0, 0])
        held[0] += count
        held[1] += nbytes
        try:
            yield
        finally:
            held[0] -= count
            held[1] -= nbytes
            if held == [0, 0] and self._holding.get(tenant) is held:
                del self._holding[tenant]

    async def _admit(self, tenant: str, count: int, nbytes: int) -> bool:
        """False: nothing to hold (no limit, or nothing written)."""
        max_count, max_bytes = self._limits(tenant)
        if (max_count is None and max_bytes is None) or not (count or nbytes):
            return False
        held, size = await self._now(tenant)
        pending = self._holding.get(tenant, (0, 0))
        held, size = held + pending[0] + count, size + pending[1] + nbytes
        if max_count is not None and count and held > max_count:
            raise TenantStorageFull(tenant, "count", max_count, held)
        if max_bytes is not None and size > max_bytes:
            raise TenantStorageFull(tenant, "bytes", max_bytes, size)
        return True

    def added(self, tenant: str, count: int, nbytes: int) -> None:
        """This replica committed a write the last reading does not hold."""
        for entry in (self._totals.get(tenant), self._during.get(tenant)):
            if entry is not None:
                entry[0] += count
                entry[1] += nbytes

    def removed(self, tenant: str, count: int, nbytes: int) -> None:
        """This replica deleted `count` items of `nbytes` of the tenant's."""
        self._during.pop(tenant, None)  # a reading under way may not have seen it go: not kept
        entry = self._totals.get(tenant)
        if entry is not None:
            entry[0] = max(0, entry[0] - count)
            entry[1] = max(0, entry[1] - nbytes)

    def forget(self, tenant: str | None = None) -> None:
        """Something of the tenant's (None: of any tenant) was deleted: read again at its next write."""
        if tenant is None:
            self._totals.clear()
            self._during.clear()
        else:
            self._totals.pop(tenant, None)
            self._during.pop(tenant, None)

    async def _now(self, tenant: str) -> tuple[int, int]:
        entry = self._totals.get(tenant)
        if entry is not None and self._clock() - entry[2] < self._refresh_s:
            return entry[0], entry[1]
        reading = self._reading.get(tenant)
        if reading is None:  # one read per tenant at a time; the writes meanwhile wait for it
            reading = self._reading[tenant] = asyncio.ensure_future(self._fetch(tenant))
            reading.add_done_callback(lambda done: self._read_ended(tenant, done))
        # shielded: a waiter cancelled (its client gone) leaves the reading to the others
        return await asyncio.shield(reading)

    def _read_ended(self, tenant: str, done: asyncio.Future) -> None:
        self._reading.pop(tenant, None)
        if not done.cancelled():
            done.exception()  # retrieved: a failed reading its waiters all left is not logged as unretrieved

    async def _fetch(self, tenant: str) -> tuple[int, int]:
        at = self._clock()
        during = self._during[tenant] = [0, 0]
        try:
            count, size = await self._read(tenant)
        finally:
            kept = self._during.get(tenant) is during
            if kept:
                del self._during[tenant]
        count, size = count + during[0], size + during[1]
        if kept:
            if len(self._totals) >= _MAX_TENANTS:
                self._totals.clear()
            self._totals[tenant] = [count, size, at]
        return count, size
