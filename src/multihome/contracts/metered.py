"""The event contracts consume: one metered call, handed over by metering.

Metering (`multihome.metering`) builds `MeteredCall` and calls `MeteredSink.metered(m)` on every
registered sink. When that module provides the type, it is used; this fallback has the same shape.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import msgspec

from ..accounting.record import CallRecord

try:  # pragma: no cover - depends on which engineer's code is merged first
    from ..metering.record import MeteredCall  # type: ignore[attr-defined]  # noqa: F401
except ImportError:

    class MeteredCall(msgspec.Struct, frozen=True, kw_only=True):  # type: ignore[no-redef]
        call: CallRecord
        cost: Decimal  # what the call cost at the price in force, full precision
        currency: str
        price_version: str


class MeteredSink(Protocol):
    def metered(self, m: MeteredCall) -> None:
        """Called on the event loop after every metered call; must not block (enqueue)."""
        ...
