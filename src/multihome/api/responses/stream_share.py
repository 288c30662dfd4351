"""How many background responses' streams one tenant follows on this replica at once
(`responses.background.max_streams_per_tenant`, docs/responses.md "Background mode").

Each follower holds a connection and reads the store at every wake-up and every `poll_s`: without a bound one
tenant attaching thousands of `GET /v1/responses/{id}?stream=true` to one response multiplied the reads every
tenant's stored state waits on. A resume past the tenant's share is a 429; a create's own stream is counted
but never refused (its response is stored by then, and open creates are capped by `max_open_per_tenant`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ...schema.errors import ApiError


class StreamShare:
    def __init__(self, cap: int | None) -> None:
        self.cap = cap  # None: no bound
        self.open: dict[str, int] = {}  # tenant -> streams followed now (a tenant with none is not here)

    @contextlib.contextmanager
    def held(self, tenant: str, *, may_refuse: bool) -> Iterator[None]:
        held = self.open.get(tenant, 0)
        if may_refuse and self.cap is not None and held >= self.cap:
            raise ApiError(
                429,
                f"Your tenant is following {held} background response streams on this replica, the gateway's limit "
                "(responses.background.max_streams_per_tenant). Close some, or poll GET /v1/responses/{id} "
                "without stream, and retry.",
                type="requests",
                code="too_many_response_streams",
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
