"""A provider pool's cap on upstream requests in flight (`providers.<name>.max_connections`).

pyqwest 0.12.0 does not bound its connections (`max_connections_per_address` let 6 requests run
under a cap of 2), so the gateway does: a call takes a permit before its request and gives it back
when the request is over (the answer read, a stream ended or closed, an error, a cancel). With at
most N requests in flight, the pool never needs more than N connections.

An asyncio.Semaphore would do, but its acquire is a coroutine per call; the usual case (a permit
free) is a counter here, and only a call that finds none free waits on a future.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    __slots__ = ("free", "cap", "_waiters")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.free = cap
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a permit if one is free now (no waiter goes before it); False: `await wait()`."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait for a permit (first come, first served). Cancelling the wait (the call's timeout, the
        client gone) leaves no permit taken; the caller bounds the wait with asyncio.timeout."""
        if self.take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self.free > 0:  # queued behind a waiter whose cancel is not handled yet: permits are free
            self._wake()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a permit as the cancel came: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
                if self.free > 0 and self._waiters:
                    self._wake()  # a call that queued behind this one meanwhile
            raise

    def give(self) -> None:
        """Give a permit back: to the first waiter still waiting, else to the pool."""
        self.free += 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        """Hand the free permits to the waiters, first come first served (a cancelled one is skipped)."""
        waiters = self._waiters
        while self.free > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                self.free -= 1
                fut.set_result(None)

    @property
    def in_use(self) -> int:
        """Permits held (a permit handed to a waiter counts from the hand-over)."""
        return self.cap - self.free


# The message of the CancelledError a cancel during `wait_permit` raises: the request was never sent, so no
# provider bills it (routing/attempts.py charges the prompt of one that was).
UNSENT = "cancelled before its request was sent"


async def wait_permit(gate: Gate, total_s: float | None) -> None:
    """Wait for a permit no longer than the call's total timeout (as aiohttp's total counted the wait
    for a pooled connection): TimeoutError then. A cancel (a hedge lost, the client gone, the group's
    budget) ends the wait as it ends the call, its CancelledError saying `UNSENT`."""
    try:
        if total_s is None:
            await gate.wait()
            return
        async with asyncio.timeout(total_s):
            await gate.wait()
    except asyncio.CancelledError:
        raise asyncio.CancelledError(UNSENT) from None
