"""How many calls of one tenant run at once on this replica on routes whose work is the shared database's
(conversations, memory): they cost no upstream call, so no rate limit or budget holds them, and one tenant's
thousand concurrent item writes held every connection of the store's pool, so every tenant's stored state
waited behind them.

    gate = TenantGate(8, "responses.conversations.max_concurrent_per_tenant")
    handler = gate.guard(handler)     # a route's handler, run in its tenant's turn

A tenant's calls run at most `running` at once; up to `WAITING_FACTOR` times as many more wait their turn; a
call past those is a 429 (`too_many_concurrent_requests`) at once. The other tenants' calls are not held.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..schema.errors import ApiError
from ..tenant_tally import TallyFull, TenantTurns
from .asgi import Receive, Send
from .pipeline import Call
from .routes import Handler

WAITING_FACTOR = 32  # calls that may wait their turn, per call that may run: each waits before its body is read


class TenantGate:
    def __init__(self, running: int | None, setting: str) -> None:
        self.running, self.setting = running, setting
        # Each tenant's calls running or waiting, and its turns (None: no bound, handlers are left as they are).
        self._calls = None if running is None else TenantTurns(running, cap=running * (1 + WAITING_FACTOR))

    def guard(self, handler: Handler) -> Handler:
        if self.running is None:
            return handler

        async def guarded(call: Call, receive: Receive, send: Send) -> None:
            assert call.principal is not None  # these routes identify first
            async with self._turn(call.principal.tenant):
                await handler(call, receive, send)

        return guarded

    @contextlib.asynccontextmanager
    async def _turn(self, tenant: str) -> AsyncIterator[None]:
        assert self.running is not None and self._calls is not None
        try:
            self._calls.take(tenant)
        except TallyFull as full:
            raise ApiError(
                429,
                f"Your tenant has {full.held} of these requests running or waiting on this replica; at most "
                f"{self.running} run at once ({self.setting}) and {self.running * WAITING_FACTOR} wait. "
                "Retry when some have finished.",
                type="requests",
                code="too_many_concurrent_requests",
                headers={"retry-after": "1"},
            ) from None
        try:
            async with self._calls.turns[tenant]:
                yield
        finally:
            self._calls.give(tenant)
