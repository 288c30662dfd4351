"""A stored contract row the gateway cannot read (a hand edit, a row another version wrote) on SQLite and
PostgreSQL: the gateway still starts, every other contract still accrues, nothing is lost or counted twice.
An agreement that cannot be read is left out and reported; a totals row is rebuilt from the accruals it
sums (and so mended); a contract whose accruals cannot be read either keeps its own accruals back, tried
again until the row is fixed, without holding up the others."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest
import sqlalchemy as sa

from multihome.config.contracts import parse_contracts
from multihome.contracts.service import ContractsService
from multihome.storage.engine import create_engine
from multihome.storage.errors import UnreadableRow

from .helpers import metered, ts
from .test_ledger import CFG

pytestmark = pytest.mark.anyio
AT = ts("2026-02-01T10:00")


async def sql(url: str, statement: str, params: dict | None = None) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement), params or {})
    finally:
        await engine.dispose()


async def scalar(url: str, statement: str):
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(statement))).scalar_one()
    finally:
        await engine.dispose()


async def until(condition, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def accrue(svc: ContractsService, prefix: str, n: int, cost: str = "1.00") -> None:
    for i in range(n):
        svc.metered(metered(f"{prefix}{i}", cost, AT + i))


async def test_an_unreadable_totals_row_is_rebuilt_from_its_accruals_and_the_cap_still_holds(migrated_url, caplog):
    svc = ContractsService(parse_contracts(CFG), migrated_url)
    await svc.start()
    try:
        await accrue(svc, "a", 10, "20.00")  # rs: 3.00 each up to its cap of 10; az: 20.00 each
        await svc.flush(timeout_s=20)
        assert svc.accrued("rs") == Decimal("10") and svc.accrued("az") == Decimal("200.00")
    finally:
        await svc.close()
    await sql(migrated_url, "UPDATE ledger_totals SET accrued = 'lots' WHERE contract_id = 'rs'")

    caplog.set_level(logging.ERROR, logger="multihome.contracts")
    svc = ContractsService(parse_contracts(CFG), migrated_url)
    await svc.start()  # on main: the refresh at start raised, and the gateway did not start
    try:
        assert [(u.table, u.id) for u in svc.unreadable] == [("ledger_totals", "rs")]
        await accrue(svc, "b", 5, "20.00")
        await svc.flush(timeout_s=20)  # on main: every batch failed on the row, retried for ever
        assert svc.accrued("rs") == Decimal("10")  # rebuilt at the cap: nothing more accrued
        assert svc.accrued("az") == Decimal("300.00")  # the other contract was never held up
        assert "ledger_totals rs cannot be read" in caplog.text and "lots" not in caplog.text
        assert Decimal(await scalar(migrated_url, "SELECT accrued FROM ledger_totals WHERE contract_id = 'rs'")) == 10
        assert await scalar(migrated_url, "SELECT calls FROM ledger_totals WHERE contract_id = 'rs'") == 15
    finally:
        await svc.close()


async def test_a_contract_whose_accruals_cannot_be_read_is_held_back_and_written_once_fixed(migrated_url, caplog):
    svc = ContractsService(parse_contracts(CFG), migrated_url)
    await svc.start()
    try:
        await accrue(svc, "a", 2)
        await svc.flush(timeout_s=20)
        await sql(migrated_url, "UPDATE ledger_totals SET accrued = 'lots' WHERE contract_id = 'rs'")
        await sql(
            migrated_url, "UPDATE ledger_accruals SET amount = 'x' WHERE contract_id = 'rs' AND request_id = 'a0'"
        )
        caplog.set_level(logging.ERROR, logger="multihome.contracts")
        before = svc.committed
        await accrue(svc, "b", 3)
        await until(lambda: svc.accrued("az") == Decimal("5.00"), "the other contract's accruals were not written")
        assert svc.committed == before + 3 and svc.held_from() is None  # rs's three are held (not spooled here)
        assert caplog.text.count("ledger_accruals a0") == 1  # once, not per retry
        assert "'x'" not in caplog.text  # never a stored value
        with pytest.raises(UnreadableRow, match="a0"):  # a report that left the accrual out would be wrong
            await svc.ledger.accruals("rs")

        await sql(migrated_url, "UPDATE ledger_accruals SET amount = '0.15' WHERE request_id = 'a0'")
        await svc.flush(timeout_s=20)  # the held ones are written on their next try
        assert svc.accrued("rs") == Decimal("0.75") and svc.totals["rs"].calls == 5
    finally:
        await svc.close()


async def test_an_agreement_that_cannot_be_read_is_left_out_and_the_others_accrue(migrated_url, caplog):
    cfg = {**CFG, "revenue_share": [], "commitments": [], "refresh_s": 0.05}
    svc = ContractsService(parse_contracts(CFG), migrated_url)
    await svc.start()
    try:
        for name in ("rs-a", "rs-b"):
            a = parse_contracts({"revenue_share": [{**CFG["revenue_share"][0], "id": name}]}).revenue_share[0]
            await svc.create_agreement(a, actor="test")
    finally:
        await svc.close()
    bad = '{"kind": "revenue_share", "id": "rs-a", "rate": "lots"}'
    await sql(migrated_url, "UPDATE contract_agreements SET spec = :bad WHERE id = 'rs-a'", {"bad": bad})

    caplog.set_level(logging.ERROR, logger="multihome.contracts")
    svc = ContractsService(parse_contracts(cfg), migrated_url)
    await svc.start()  # on main: the refresh at start raised
    try:
        assert [(u.table, u.id) for u in svc.unreadable] == [("contract_agreements", "rs-a")]
        assert svc.agreement("rs-a") is None and svc.unreadable_agreement("rs-a") is not None
        await accrue(svc, "c", 2)
        await svc.flush(timeout_s=20)
        assert svc.accrued("rs-b") == Decimal("0.30") and svc.accrued("rs-a") == 0
        await asyncio.sleep(0.3)  # a few refreshes: reported once, not at each
        assert caplog.text.count("contract_agreements rs-a") == 1
    finally:
        await svc.close()
