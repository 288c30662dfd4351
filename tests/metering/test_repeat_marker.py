"""A background turn (or a background run's agent step) is run again by another replica when the one running
it died before its checkpoint (docs/responses.md "Exactly once after a crash"). The repeat records nothing
when an earlier run recorded the call (`Metering.stored_row`): counted once, as billed once. With Redis
counters the earlier run's counts are in Redis at once, but its usage row may not be in the database yet
(it is in the dead replica's spool until that one starts again): the marker `mark_recorded` puts in the
same settlement batch as the call's counts says so to every replica."""

from __future__ import annotations

import uuid

import pytest

from multihome.config.metering import BudgetRule, MeteringConfig
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering

from .conftest import Dep, call, principal

pytestmark = pytest.mark.anyio
PRICES = PriceTable({"dep-a": DeploymentPrice.of("2.5", "10", None, "USD")})  # per 1M tokens


@pytest.mark.parametrize("marked", [True, False], ids=["recorded", "not-recorded"])
async def test_a_repeat_on_another_replica_finds_the_turn_recorded_before_its_row_is_stored(
    marked, redis_server, tmp_path
):
    from multihome.storage import open_store

    url = f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}"
    await (await open_store(url, migrate=True)).close()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    cfg = MeteringConfig(key_prefix=prefix, budgets=[BudgetRule(scope="tenant", id="*", amount=100, period="day")])
    # The replica that ran the turn first: its usage row never reaches the database (it died before its writer
    # committed it: no storage here), but its counts reach Redis.
    first = Metering(cfg, PRICES, counters=RedisCounters(redis_server.url, prefix=prefix, timeout_s=30))
    other = Metering(
        cfg, PRICES, storage_url=url, counters=RedisCounters(redis_server.url, prefix=prefix, timeout_s=30)
    )
    await other.start()
    await first.start()
    try:
        await first.limiter.admit(principal(), "g", [Dep("dep-a")], 100, 100, "turn-1")
        first.record(call("turn-1", deployment="dep-a", prompt=1000, completion=100))
        if marked:
            first.mark_recorded("turn-1")  # as the job runner does, at once after recording the turn's call
        await first.limiter.drain()
        # The repeat on the other replica asks before it records the same turn (runner.py `billed`).
        assert await other.stored_row("turn-1") is marked
        assert await other.stored_row("turn-2") is False
    finally:
        await first.close()
        await other.close()


async def test_in_process_counters_need_no_marker(tmp_path):
    """A restart of the only process seeds its counters from the rows, the spool's replayed first: the row is
    the record, and `mark_recorded` keeps nothing in memory."""
    from multihome.storage import open_store

    url = f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}"
    await (await open_store(url, migrate=True)).close()
    m = Metering(MeteringConfig(budgets=[BudgetRule(scope="tenant", id="*", amount=100)]), PRICES, storage_url=url)
    await m.start()
    try:
        m.mark_recorded("turn-1")
        assert await m.stored_row("turn-1") is False
        values, _ = m.limiter.counters.tables()  # type: ignore[union-attr]
        assert not [k for k in values if "turn-1" in k]
    finally:
        await m.close()
