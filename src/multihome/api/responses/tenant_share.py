"""How much of one kind of long-lived work one tenant holds at once on this replica: past its share a request
for more is a 429 before anything is sent, and the other tenants' work is not held by it.

    streams = TenantShare(100, "background response streams open", "responses.background.max_streams_per_tenant",
                          "too_many_response_streams", "Close some and retry.")
    with streams.held(tenant, may_refuse=True):   # ApiError 429 past the share
        ...

Used for the streams a tenant follows (background.py: each holds a connection and reads the store every poll)
and for foreground agent runs (door.py: each holds a connection, its MCP sessions, for up to max_run_s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ...schema.errors import ApiError
from ...tenant_tally import TallyFull, TenantTally


class TenantShare:
    def __init__(self, cap: int | None, what: str, setting: str, code: str, advice: str) -> None:
        self.tally = TenantTally(cap)  # None: no bound
        self.what, self.setting, self.code, self.advice = what, setting, code, advice

    @contextlib.contextmanager
    def held(self, tenant: str, *, may_refuse: bool = True) -> Iterator[None]:
        """One more of the tenant's, for the block; `may_refuse` False: counted, never refused."""
        try:
            self.tally.take(tenant, may_refuse=may_refuse)
        except TallyFull as full:
            raise ApiError(
                429,
                f"Your tenant has {full.held} {self.what} on this replica, the gateway's limit ({self.setting}). "
                f"{self.advice}",
                type="requests",
                code=self.code,
                headers={"retry-after": "1"},
            ) from None
        try:
            yield
        finally:
            self.tally.give(tenant)
