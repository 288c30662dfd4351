"""asyncio helpers for what Python 3.11's own get wrong.

On 3.11, `asyncio.wait_for` swallows a cancellation that arrives just as the awaited thing
completes (fixed in 3.12): a background loop cancelled at that moment runs on, and whoever awaits
it at shutdown waits for ever (a test's teardown hung this way on CI). `asyncio.timeout` counts
cancellations and lets an outside one through, so the loops wait with it.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Whether `event` was set within `timeout` seconds. A cancellation always propagates."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
