"""A contract whose ledger cannot be read (its totals row and an accrual row, a hand edit) while calls keep
coming, on SQLite and PostgreSQL: its accruals are kept in the database (ledger_held), so the gateway's
memory of them stays one entry per contract and the usage spool lets its files go as before; an accrual
replayed meanwhile (a kill) is held once; once the row is mended every accrual is in the ledger exactly
once. On main they were a list in memory, one per call, and the spool kept every row from the oldest on."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from multihome.config.contracts import parse_contracts
from multihome.contracts.service import ContractsService
from multihome.contracts.tables import ledger_accruals

from .conftest import call
from .test_spool import _metering, _rows
from .test_spool_ledger import CONTRACTS

pytestmark = pytest.mark.anyio
CALLS = 5_000  # bounded: in process, in chunks


async def _sql(contracts: ContractsService, statement: str, params: dict | None = None):
    assert contracts.ledger is not None
    async with contracts.ledger.engine.begin() as conn:
        result = await conn.execute(sa.text(statement), params or {})
        return result.all() if result.returns_rows else []


def _spooled_rows(spool: Path) -> int:
    """Rows in the spool files (a file's first line is its header; a let-go file is zeroed or deleted)."""
    return sum(max(0, f.read_bytes().split(b"\0", 1)[0].count(b"\n") - 1) for f in spool.iterdir())


async def _until(condition, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 120
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def test_accruals_held_for_an_unreadable_ledger_are_bounded_and_written_once_mended(db_url, tmp_path):
    spool = tmp_path / "spool"
    contracts = ContractsService(parse_contracts({**CONTRACTS, "flush_interval_s": 0.02}), db_url)
    m = _metering(db_url, spool, segment_bytes=256 << 10, flush_interval_ms=20)
    m.hold_spool(contracts)
    await contracts.start()
    await m.start()
    try:
        for i in range(10):
            m.record(call(f"ok{i}", prompt=100 + i, completion=50))
        await m.writer.flush()
        await contracts.flush()
        ((amount,),) = await _sql(
            contracts, "SELECT amount FROM ledger_accruals WHERE contract_id = 'rs' AND request_id = 'ok0'"
        )
        await _sql(contracts, "UPDATE ledger_totals SET accrued = 'lots' WHERE contract_id = 'rs'")
        await _sql(contracts, "UPDATE ledger_accruals SET amount = 'x' WHERE contract_id = 'rs' AND request_id = 'ok0'")

        spooled: list[tuple] = []  # the rows a kill would leave, for the replay below
        append = m.writer.spool.append
        m.writer.spool.append = lambda row: (spooled.append(row), append(row))[1]  # type: ignore[method-assign]
        most = 0
        for chunk in range(0, CALLS, 500):
            for i in range(chunk, chunk + 500):
                m.record(call(f"req{i}", prompt=100 + i % 97, completion=50 + i % 13))
            await m.writer.flush()

            async def cm_caught_up(n=chunk + 500) -> bool:
                t = contracts.totals.get("cm")
                return t is not None and t.calls == 10 + n

            await _until(cm_caught_up, "the readable contract's accruals were not written")
            most = max(most, len(contracts._held))
        m.writer.spool.append = append  # type: ignore[method-assign]
        # What is held in memory: one entry per contract (on main, one accrual per call: 5,000).
        assert most <= 1, most

        async def let_go() -> bool:
            return _spooled_rows(spool) == 0

        await _until(let_go, "the spool kept the rows of the held accruals")  # on main: every row from req0 on
        assert len(list(spool.iterdir())) <= 2  # the current file (and the one made ahead)
        (held,) = (await _sql(contracts, "SELECT COUNT(*) FROM ledger_held WHERE contract_id = 'rs'"))[0]
        assert held == CALLS

        contracts.replayed(spooled[:100])  # as a restart after a kill would: held once, not twice
        await contracts.flush()
        (held,) = (await _sql(contracts, "SELECT COUNT(*) FROM ledger_held"))[0]
        assert held == CALLS

        await _sql(
            contracts,
            "UPDATE ledger_accruals SET amount = :a WHERE contract_id = 'rs' AND request_id = 'ok0'",
            {"a": amount},
        )

        m.record(call("after"))  # a call to it tries the held ones at once (else the backoff's next try)

        async def mended() -> bool:
            t = contracts.totals.get("rs")
            return t is not None and t.calls == 10 + CALLS + 1

        await _until(mended, "the held accruals were not written once the row was mended")
        (held,) = (await _sql(contracts, "SELECT COUNT(*) FROM ledger_held"))[0]
        assert held == 0
        contracts.replayed(spooled[-100:])  # a replay after the mend: on record, skipped
        await contracts.flush()

        usage = await _rows(m)
        assert len(usage) == 10 + CALLS + 1
        costs = {rid: Decimal(nanos) / 10**9 for rid, nanos in usage.items()}
        async with contracts.ledger.engine.connect() as conn:  # type: ignore[union-attr]
            c = ledger_accruals.c
            found = (await conn.execute(sa.select(c.request_id, c.amount).where(c.contract_id == "rs"))).all()
        assert sorted(r for r, _ in found) == sorted(usage), "every call accrued to rs exactly once"
        expected = sum(v * Decimal("0.15") for v in costs.values())
        assert sum(Decimal(a) for _, a in found) == expected
        await contracts.refresh()
        assert contracts.totals["rs"].calls == 10 + CALLS + 1 and contracts.totals["rs"].accrued == expected
        assert contracts.totals["cm"].accrued == sum(costs.values())
    finally:
        await m.close()
        await contracts.close()
