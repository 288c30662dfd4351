"""How many of something each tenant holds now, at most `cap` each and `total` of all tenants together:
the one count behind a tenant's share of long-lived work (api/responses/tenant_share.py), of MCP host lookups
(tools/egress.py), and, with each tenant's turns (`TenantTurns`), of a stored-state route's calls
(api/tenant_gate.py) and of memory's threads (state/memory/threads.py).

    lookups = TenantTally(cap=8, total=64)
    lookups.take(tenant)        # TallyFull past either bound; counted otherwise
    ...
    lookups.give(tenant)        # on any thread: how many the tenant still holds

A tenant holding none is not kept. The counts are under a lock, as a lookup is given back on the resolver's
thread (an uncontended acquire is some 50 ns: the loop-only users pay that, not a second class).
"""

from __future__ import annotations

import asyncio
import threading


class TallyFull(Exception):
    """A take past a bound: `held` already counted, the tenant's (`everyone` False) or all tenants'."""

    def __init__(self, held: int, everyone: bool) -> None:
        super().__init__(held, everyone)
        self.held, self.everyone = held, everyone


class TenantTally:
    __slots__ = ("_lock", "cap", "everyone", "held", "total")

    def __init__(self, cap: int | None, total: int | None = None) -> None:
        self.cap, self.total = cap, total  # None: no bound
        self.held: dict[str, int] = {}  # tenant -> held now
        self.everyone = 0  # held now by all tenants together
        self._lock = threading.Lock()

    def take(self, tenant: str, *, may_refuse: bool = True) -> None:
        """One more of `tenant`'s, or TallyFull past a bound (`may_refuse` False: counted, never refused)."""
        with self._lock:
            mine = self.held.get(tenant, 0)
            if may_refuse:
                if self.cap is not None and mine >= self.cap:
                    raise TallyFull(mine, everyone=False)
                if self.total is not None and self.everyone >= self.total:
                    raise TallyFull(self.everyone, everyone=True)
            self.held[tenant] = mine + 1
            self.everyone += 1

    def give(self, tenant: str) -> int:
        """One of `tenant`'s given back: how many it still holds."""
        with self._lock:
            self.everyone -= 1
            left = self.held[tenant] - 1
            if left:
                self.held[tenant] = left
            else:
                del self.held[tenant]
            return left


class TenantTurns(TenantTally):
    """A tally whose tenants each take turns, `running` at once (`turns[tenant]`, an asyncio.Semaphore kept while the
    tenant holds any): a taker waits its turn on it, and gives back here once it is over. Loop-only."""

    __slots__ = ("running", "turns")

    def __init__(self, running: int, cap: int | None = None) -> None:
        super().__init__(cap)
        self.running = running
        self.turns: dict[str, asyncio.Semaphore] = {}

    def take(self, tenant: str, *, may_refuse: bool = True) -> None:
        super().take(tenant, may_refuse=may_refuse)
        if tenant not in self.turns:
            self.turns[tenant] = asyncio.Semaphore(self.running)

    def give(self, tenant: str) -> int:
        left = super().give(tenant)
        if not left:
            del self.turns[tenant]  # none running or waiting: its semaphore is whole
        return left
