"""What metering hands on after every call: the call, its cost and the price table it used."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from ..accounting.record import CallRecord

if TYPE_CHECKING:
    from .prices import DeploymentPrice

_ZERO = Decimal(0)
_new = object.__new__


class MeteredCall:
    """One metered call, read-only for its sinks. `cost` is made on first use from metering's integer
    charge (prices.py: the same Decimal as the Decimal arithmetic's), so a sink that needs no Decimal
    (no contract agreement matched the call) costs none; `charged` says cost > 0 without making it."""

    __slots__ = ("call", "currency", "price_version", "spooled", "_cost", "_price", "_units")

    def __init__(
        self,
        *,
        call: CallRecord,
        currency: str,
        price_version: str,
        cost: Decimal | None = None,
        spooled: int = 0,
        price: DeploymentPrice | None = None,
        units: int = 0,
    ) -> None:
        self.call = call
        self.currency = currency
        self.price_version = price_version
        # The position of the call's usage row in this process's usage spool (0: none).
        self.spooled = spooled
        self._cost = cost  # exact, at the prices of `price_version`; 0 for an unpriced deployment or no usage
        self._price = price  # with `units`: what `cost` is made from when it was not given
        self._units = units

    @classmethod
    def of(
        cls,
        call: CallRecord,
        currency: str,
        price_version: str,
        spooled: int,
        price: DeploymentPrice | None,
        units: int,
    ) -> MeteredCall:
        """One per metered call (Metering.record): positional, without __init__'s keyword call (a class
        call with keywords costs the interpreter twice the instructions of these seven stores)."""
        m = _new(cls)
        m.call = call
        m.currency = currency
        m.price_version = price_version
        m.spooled = spooled
        m._cost = None
        m._price = price
        m._units = units
        return m

    @property
    def cost(self) -> Decimal:
        cost = self._cost
        if cost is None:
            price, usage = self._price, self.call.usage
            cost = self._cost = price.decimal(usage, self._units) if price and usage and self._units else _ZERO
        return cost

    @property
    def amount(self) -> float:
        """`float(cost)` without making the Decimal (metrics' cost series: prices.py `amount`)."""
        cost = self._cost
        if cost is not None:
            return float(cost)
        price, usage = self._price, self.call.usage
        return price.amount(usage, self._units) if price and usage and self._units else 0.0

    @property
    def charged(self) -> bool:
        """cost > 0, without making the Decimal."""
        return self._units > 0 if self._cost is None else self._cost > 0


class MeteredSink(Protocol):
    """`m.call`'s hashes are empty unless another CallSink reads them (Metering.hashes). A sink may
    also have a `listening` flag: while it is false, Metering hands it no calls (it
    would drop them all); it then sets `listening_changed`, to call whenever the flag changes."""

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

    def replayed(self, rows: list[tuple]) -> None:
        """Usage rows read back from a dead process's spool file (row.py's tuples)."""
        ...

    async def flush(self, timeout_s: float = 30.0, *, stopping: bool = False) -> None: ...
