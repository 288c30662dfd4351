"""providers/gate.py: a provider pool's permits (max_connections) go first come first served, and a
waiter that is cancelled, before or after it was handed a permit, leaves none taken."""

from __future__ import annotations

import asyncio

from multihome.providers.gate import Gate, wait_permit


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_permits_go_in_order_and_come_back():
    async def run():
        gate = Gate(2)
        assert gate.take() and gate.take() and not gate.take()
        order: list[int] = []

        async def waiter(i: int) -> None:
            await gate.wait()
            order.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
        await _turns()
        assert order == [] and gate.in_use == 2
        gate.give()
        await _turns()
        assert order == [0]
        gate.give()
        gate.give()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2] and gate.in_use == 2 and not gate.take()
        gate.give()
        gate.give()
        assert gate.free == 2

    asyncio.run(run())


def test_a_cancelled_waiter_takes_no_permit_before_or_after_it_was_handed_one():
    async def run():
        gate = Gate(1)
        assert gate.take()
        first = asyncio.create_task(gate.wait())
        second = asyncio.create_task(gate.wait())
        await _turns()
        first.cancel()  # still waiting
        await asyncio.gather(first, return_exceptions=True)
        assert first.cancelled()
        gate.give()  # handed to `second` ...
        second.cancel()  # ... which is cancelled before it runs: the permit must go back
        await asyncio.gather(second, return_exceptions=True)
        assert second.cancelled() and gate.free == 1 and not gate._waiters

    asyncio.run(run())


def test_a_wait_for_a_permit_times_out_with_the_total_timeout():
    async def run():
        gate = Gate(1)
        assert gate.take()
        try:
            await wait_permit(gate, 0.05)
        except TimeoutError:
            pass
        else:
            raise AssertionError("the wait did not time out")
        assert gate.free == 0 and not gate._waiters
        gate.give()
        await wait_permit(gate, 0.05)  # free now: no wait
        assert gate.free == 0

    asyncio.run(run())
