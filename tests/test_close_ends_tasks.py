"""A component's `close()` returns with its background tasks ended, not only asked to end: a task still
running when close returns runs on while what it uses (a connection, an engine, a file) is closed under
it, or is "destroyed but pending" when the loop goes (aio.cancel_and_wait). Each case starts the component
with its task running and checks the task is done the moment close() returns. (The contracts refresh and
the call log's writer have tests of their own: tests/contracts/test_ledger.py, tests/observability/.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from multihome.config.metering import MeteringConfig
from multihome.metering.counters import LocalCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import PriceTable
from multihome.routing.health import HealthProber

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_the_health_prober_ends_its_task():
    prober = HealthProber([], None, 0.01, 1.0)  # type: ignore[arg-type]  # no deployment: no breaker read
    await prober.start()
    await asyncio.sleep(0.05)  # its loop under way
    task = prober._task
    await prober.close()
    assert task is not None and task.done()


async def test_the_limiter_ends_its_ticket_sweeper():
    limiter = Limiter(MeteringConfig(), PriceTable({}), LocalCounters(), time.time)
    await limiter.start()
    await asyncio.sleep(0.05)
    task = limiter._sweeper
    await limiter.close()
    assert task is not None and task.done()
