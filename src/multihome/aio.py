"""asyncio helpers for what Python 3.11's own get wrong.

On 3.11, `asyncio.wait_for` swallows a cancellation that arrives just as the awaited thing
completes (fixed in 3.12): a background loop cancelled at that moment runs on, and whoever awaits
it at shutdown waits for ever (a test's teardown hung this way on CI). `asyncio.timeout` counts
cancellations and lets an outside one through, so the loops wait with it. And a task cancelled at
close must be awaited too (`cancel_and_wait`), or it is still running when its connection is closed.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("multihome")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Whether `event` was set within `timeout` seconds. A cancellation always propagates."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(task: asyncio.Task | None, timeout: float = 10.0) -> None:
    """Cancel a background task at close and wait until it has ended: its `finally` blocks (a connection
    given back, a batch put back) run now, on this loop, before what it uses is closed under it, and no
    "Task was destroyed but it is pending" when the loop goes. Bounded: a task that does not end within
    `timeout` (its clean-up waits on a host that stopped answering) is logged and left. What it ended with
    is retrieved, not raised: a cancelled loop's CancelledError, or an error it had already logged."""
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("%s did not end within %g s of being cancelled at close", task.get_name(), timeout)
    elif not task.cancelled():
        task.exception()
