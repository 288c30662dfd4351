"""The ledger on SQLite and PostgreSQL: partial accrual at the cap, idempotent replay, exact text
amounts, the cap holding across two replicas writing at once, and the writer never losing a batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from decimal import Decimal

import pytest
import sqlalchemy as sa

from multihome.config.contracts import parse_contracts
from multihome.contracts.ledger import Ledger, Pending
from multihome.contracts.service import ContractsService
from multihome.contracts.tables import ledger_accruals
from multihome.storage.engine import create_engine

from .helpers import metered, ts

pytestmark = pytest.mark.anyio
UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, tzinfo=UTC)


def P(req: str, requested: str, cap: str | None = "10", contract: str = "rs", minute: int = 0) -> Pending:
    return Pending(
        contract,
        req,
        T0 + dt.timedelta(minutes=minute),
        Decimal(requested) * 2,
        Decimal(requested),
        None if cap is None else Decimal(cap),
        "v1",
    )


@pytest.fixture
async def ledger(migrated_url):
    engine = create_engine(migrated_url)
    yield Ledger(engine)
    await engine.dispose()


async def test_crossing_accrual_is_partial_and_later_ones_accrue_nothing(ledger):
    totals = await ledger.apply(
        [P("r1", "4", minute=1), P("r2", "4", minute=2), P("r3", "4", minute=3), P("r4", "4", minute=4)]
    )
    assert totals["rs"].accrued == Decimal("10")  # 4 + 4 + 2 (partial) + 0
    assert totals["rs"].requested == Decimal("16")
    assert totals["rs"].calls == 4
    assert totals["rs"].capped_at == T0 + dt.timedelta(minutes=3)  # the call that reached the cap
    rows = await ledger.accruals("rs")
    assert [(r.request_id, r.amount) for r in rows] == [
        ("r1", Decimal("4")),
        ("r2", Decimal("4")),
        ("r3", Decimal("2")),
        ("r4", Decimal("0")),
    ]


async def test_replayed_and_retried_events_never_count_twice(ledger):
    batch = [P("r1", "1.25"), P("r2", "2.5")]
    await ledger.apply(batch)
    await ledger.apply(batch)  # a retry after an ambiguous failure
    await ledger.apply([P("r2", "2.5"), P("r2", "2.5"), P("r3", "0.25")])  # duplicates inside one batch too
    t = (await ledger.totals())["rs"]
    assert (t.accrued, t.calls) == (Decimal("4.00"), 3)
    assert len(await ledger.accruals("rs")) == 3


async def test_amounts_are_stored_exactly(ledger):
    tiny = "0.000000123456789012345678901234567"  # more digits than a float or NUMERIC(18,6) keeps
    await ledger.apply([P("r1", tiny, cap=None, contract="c"), P("r2", tiny, cap=None, contract="c")])
    t = (await ledger.totals(["c"]))["c"]
    assert t.accrued == Decimal(tiny) * 2
    assert [r.amount for r in await ledger.accruals("c")] == [Decimal(tiny)] * 2


async def test_cap_holds_with_two_replicas_writing_at_once(migrated_url):
    """Two Ledgers on two engines (two replicas) race 40 batches each at one capped contract."""
    e1, e2 = create_engine(migrated_url), create_engine(migrated_url)
    try:
        l1, l2 = Ledger(e1), Ledger(e2)

        async def replica(ledger, name):
            for i in range(40):
                await ledger.apply([P(f"{name}-{i}-{j}", "0.07", cap="5.00") for j in range(3)])

        await asyncio.wait_for(asyncio.gather(replica(l1, "a"), replica(l2, "b")), 120)
        t = (await l1.totals())["rs"]
        assert t.accrued == Decimal("5.00")  # 240 x 0.07 = 16.80 requested; exactly the cap accrued
        assert t.requested == Decimal("16.80")
        rows = await l1.accruals("rs")
        assert len(rows) == 240
        assert sum(r.amount for r in rows) == Decimal("5.00")
    finally:
        await e1.dispose()
        await e2.dispose()


CFG = {
    "revenue_share": [
        {
            "id": "rs",
            "rate": "0.15",
            "basis": {"providers": ["azure-eastus"]},
            "cap": "10",
            "starts_on": "2026-01-01",
            "ends_on": "2026-12-31",
        }
    ],
    "commitments": [
        {"id": "az", "provider": "azure-eastus", "amount": "1000", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}
    ],
    "flush_interval_s": 0.01,
}


async def test_service_accrues_metered_calls_to_every_matching_agreement(migrated_url):
    svc = ContractsService(parse_contracts(CFG), migrated_url)
    await svc.start()
    try:
        at = ts("2026-02-01T10:00")
        svc.metered(metered("req_1", "20.00", at))  # rs: 3.00, az: 20.00
        svc.metered(metered("req_2", "100.00", at + 1))  # rs: 15.00 -> 7.00 (cap), az: 100.00
        svc.metered(metered("req_3", "5.00", at + 2, provider="openai"))  # neither
        svc.metered(metered("req_4", "5.00", at + 3, currency="EUR"))  # neither: other currency
        svc.metered(metered("req_5", "5.00", ts("2027-01-01T00:00")))  # neither: after the end
        svc.metered(metered("req_1", "20.00", at))  # a replay
        await svc.flush()
        assert svc.accrued("rs") == Decimal("10.00")
        assert svc.accrued("az") == Decimal("120.00")
        assert svc.totals["rs"].calls == 2
    finally:
        await svc.close()


async def test_writer_keeps_a_failed_batch_and_retries_it(sqlite_url, caplog):
    svc = ContractsService(parse_contracts(CFG), sqlite_url)
    await svc.start()
    real_apply, failures = svc.ledger.apply_readable, []

    async def flaky(batch, retry=()):
        if len(failures) < 2:
            failures.append(len(batch))
            raise OSError("database unreachable")
        return await real_apply(batch, retry)

    svc.ledger.apply_readable = flaky
    try:
        for i in range(50):
            svc.metered(metered(f"req_{i}", "1.00", ts("2026-02-01T10:00") + i))
        await svc.flush(timeout_s=20)
        assert failures and svc.write_errors == 2
        assert svc.accrued("az") == Decimal("50.00")  # every accrual arrived, once
        assert "retrying" in caplog.text
    finally:
        await svc.close()


async def test_close_drains_the_queue(sqlite_url):
    cfg = parse_contracts({**CFG, "flush_interval_s": 30})  # nothing would be written for 30 s
    svc = ContractsService(cfg, sqlite_url)
    await svc.start()
    svc.metered(metered("req_1", "2.00", ts("2026-02-01T10:00")))
    await svc.close()
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            n = (await conn.execute(sa.select(sa.func.count()).select_from(ledger_accruals))).scalar_one()
        assert n == 2  # rs and az
    finally:
        await engine.dispose()


async def test_close_waits_for_the_refresh_under_way(sqlite_url):
    # The refresh task was cancelled and not awaited: a refresh mid-read was still giving its connection back
    # (or "destroyed but pending" when the loop went) while close() closed the ledger and the engine under it.
    svc = ContractsService(parse_contracts({**CFG, "refresh_s": 0.01}), sqlite_url)
    await svc.start()
    under_way, ended = asyncio.Event(), []

    async def refresh() -> None:  # a refresh at close whose clean-up takes a few loop turns
        under_way.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.2)
            ended.append(True)

    svc.refresh = refresh
    await asyncio.wait_for(under_way.wait(), 10)
    await svc.close()
    assert ended == [True] and svc._refresher is not None and svc._refresher.done()


@pytest.mark.parametrize("spooled", [True, False])
async def test_a_stop_with_the_database_down_leaves_spooled_accruals_to_the_next_start(sqlite_url, caplog, spooled):
    # With every queued accrual's usage row in the usage spool, the next start replays the rows and accrues
    # them again: the stop gives up on a database that keeps failing after a few seconds, and says so in a
    # warning (the whole 10 s, then "they are lost" in an error, was wrong). Rows not spooled are lost: an error.
    svc = ContractsService(parse_contracts(CFG), sqlite_url)
    await svc.start()

    async def down(batch, retry=()):
        raise OSError("database unreachable")

    svc.ledger.apply_readable = down
    for i in range(3):
        m = metered(f"req_{i}", "1.00", ts("2026-02-01T10:00") + i)
        m.spooled = i + 1 if spooled else 0  # its position in the usage spool (0: not spooled)
        svc.metered(m)
    if spooled:
        with pytest.raises(TimeoutError, match="OSError: database unreachable"):
            await asyncio.wait_for(svc.flush(60, stopping=True), 120)  # as metering's close asks
    await asyncio.wait_for(svc.close(60 if spooled else 1), 120)
    said = [r for r in caplog.records if "before shutdown" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    line = said[0].getMessage()
    assert "accruals not written before shutdown (OSError: database unreachable)" in line, line
    if spooled:
        assert said[0].levelno == logging.WARNING and "the next start accrues them" in line, line
    else:
        assert said[0].levelno == logging.ERROR and "they are lost" in line, line
