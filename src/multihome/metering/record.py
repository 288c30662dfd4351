"""What metering hands on after every call: the call, its cost and the price table it used."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

import msgspec

from ..accounting.record import CallRecord


class MeteredCall(msgspec.Struct, frozen=True, kw_only=True):
    call: CallRecord
    cost: Decimal  # exact, at the prices of `price_version`; 0 for an unpriced deployment or no usage
    currency: str
    price_version: str
    spooled: int = 0  # the position of the call's usage row in this process's usage spool (0: none)


class MeteredSink(Protocol):
    def metered(self, m: MeteredCall) -> None:
        """Called on the event loop after every metered call; must not block (enqueue)."""
        ...


class SpoolHolder(MeteredSink, Protocol):
    """A sink with a queue of its own that must survive a kill (the contract ledger): the usage spool
    keeps each call's row until this sink has also committed what it made of it (spool.py), and
    replay hands it the rows a dead process left."""

    progress: Callable[[], None] | None  # set by Metering: call after each commit

    def held_from(self) -> int | None:
        """The `spooled` position of the oldest call not yet committed (None: all committed)."""
        ...

    def replayed(self, rows: list[dict]) -> None:
        """Usage rows read back from a dead process's spool file (replay.py's SpoolRow fields)."""
        ...

    async def flush(self, timeout_s: float = 30.0) -> None: ...
