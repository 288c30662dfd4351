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


class TenantShare:
    def __init__(self, cap: int | None, what: str, setting: str, code: str, advice: str) -> None:
        self.cap = cap  # None: no bound
        self.what, self.setting, self.code, self.advice = what, setting, code, advice
        self.open: dict[str, int] = {}  # tenant -> held now (a tenant holding none is not here)

    @contextlib.contextmanager
    def held(self, tenant: str, *, may_refuse: bool = True) -> Iterator[None]:
        """One more of the tenant's, for the block; `may_refuse` False: counted, never refused."""
        held = self.open.get(tenant, 0)
        if may_refuse and self.cap is not None and held >= self.cap:
            raise ApiError(
                429,
                f"Your tenant has {held} {self.what} on this replica, the gateway's limit ({self.setting}). "
                f"{self.advice}",
                type="requests",
                code=self.code,
                headers={"retry-after": "1"},
            )
        self.open[tenant] = held + 1
        try:
            yield
        finally:
            left = self.open[tenant] - 1
            if left:
                self.open[tenant] = left
            else:
                del self.open[tenant]
