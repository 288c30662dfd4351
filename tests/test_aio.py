"""wait_event lets a cancellation through even when its event is set in the same loop cycle, where
Python 3.11's asyncio.wait_for returns as if nothing happened (a background loop then runs on and
its service's close() waits for ever)."""

from __future__ import annotations

import asyncio

import pytest

from multihome.aio import wait_event


async def _cancelled_as_the_event_is_set(wait) -> bool:
    """True when the waiting task ended cancelled; False when it went on as if not cancelled."""
    event = asyncio.Event()
    went_on = asyncio.Event()

    async def loop() -> None:
        await wait(event)
        went_on.set()
        await asyncio.sleep(3600)  # a loop's next round: only a cancellation ends it now

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the task is waiting
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    await asyncio.sleep(0.01)
    if went_on.is_set():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    return task.cancelled()


def test_a_cancellation_reaches_a_task_waiting_on_an_event_that_is_set_at_the_same_time():
    assert asyncio.run(_cancelled_as_the_event_is_set(lambda ev: wait_event(ev, 5)))


def test_wait_event_says_whether_the_event_was_set():
    async def main() -> tuple[bool, bool]:
        ev = asyncio.Event()
        missed = await wait_event(ev, 0.01)
        ev.set()
        return missed, await wait_event(ev, 0.01)

    assert asyncio.run(main()) == (False, True)


@pytest.mark.skipif(__import__("sys").version_info >= (3, 12), reason="wait_for was fixed in 3.12")
def test_the_race_is_real_with_wait_for_on_3_11():
    # Guards the reason for wait_event: if this starts failing, 3.11's wait_for no longer loses the cancel.
    assert not asyncio.run(_cancelled_as_the_event_is_set(lambda ev: asyncio.wait_for(ev.wait(), 5)))
