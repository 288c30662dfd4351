"""What metering hands on after every call: the call, its cost and the price table it used."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import msgspec

from ..accounting.record import CallRecord


class MeteredCall(msgspec.Struct, frozen=True, kw_only=True):
    call: CallRecord
    cost: Decimal  # exact, at the prices of `price_version`; 0 for an unpriced deployment or no usage
    currency: str
    price_version: str


class MeteredSink(Protocol):
    def metered(self, m: MeteredCall) -> None:
        """Called on the event loop after every metered call; must not block (enqueue)."""
        ...
