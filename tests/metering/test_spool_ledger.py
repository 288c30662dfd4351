"""The contract ledger's accruals under a kill -9 (contracts/service.py as the usage spool's holder):
a call's usage row stays in the spool until its accruals are committed too, so whichever of the two
queues a SIGKILL catches uncommitted, the next start writes every answered call's row and accruals
exactly once (the ledger skips what is on record), on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from multihome.config.contracts import agreements_of, parse_contracts
from multihome.contracts.service import ContractsService
from multihome.contracts.tables import ledger_accruals
from multihome.metering.spool import UsageSpool

from .conftest import call
from .test_spool import SRC, TESTS, _metering, _row, _rows

pytestmark = pytest.mark.anyio

CONTRACTS = {
    "revenue_share": [
        {
            "id": "rs",
            "rate": "0.15",
            "basis": {"providers": ["prov"]},
            "starts_on": "2026-01-01",
            "ends_on": "2030-12-31",
        }
    ],
    "commitments": [
        {"id": "cm", "provider": "prov", "amount": "1000000", "starts_on": "2026-01-01", "ends_on": "2030-12-31"}
    ],
    "flush_interval_s": 60,  # nothing commits by itself before the kill
}


def services(url: str, spool: Path, **writer) -> tuple[ContractsService, object]:
    contracts = ContractsService(parse_contracts(CONTRACTS), url)
    m = _metering(url, spool, **writer)
    m.hold_spool(contracts)
    return contracts, m


# Calls 0-9: usage and ledger committed; 10-19: ledger only; 20-29: usage only (without the hold the
# spool would let them go, and their accruals would be lost); 30-39: neither.
CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    sys.path[:0] = [{src!r}, {tests!r}]
    from pathlib import Path
    from metering.test_spool_ledger import services
    from metering.conftest import call

    async def main():
        contracts, m = services({url!r}, Path({spool!r}), flush_interval_ms=60_000, batch_size=10_000)
        await contracts.start()
        await m.start()
        for i in range(40):
            m.record(call(f"req{{i}}", prompt=100 + i, completion=50))
            if i == 9:
                await m.writer.flush()
                await contracts.flush()
            elif i == 19:
                await contracts.flush()
            elif i == 29:
                await m.writer.flush()
        print("recorded", m.writer.spool.rows_in, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


async def _accruals(contracts: ContractsService) -> list[tuple[str, str, Decimal]]:
    assert contracts.ledger is not None
    async with contracts.ledger.engine.connect() as conn:
        q = sa.select(ledger_accruals.c.contract_id, ledger_accruals.c.request_id, ledger_accruals.c.amount)
        return [(c, r, Decimal(a)) for c, r, a in (await conn.execute(q)).all()]


def _killed_child(url: str, spool: Path) -> None:
    code = CHILD.format(src=SRC, tests=TESTS, url=url, spool=str(spool))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "recorded 40" in proc.stdout


async def test_accruals_of_a_killed_process_are_written_once_by_the_next_start(db_url, tmp_path):
    spool = tmp_path / "spool"
    _killed_child(db_url, spool)
    (left,) = spool.iterdir()
    kept = left.read_text()
    assert all(f'"req{i}"' in kept for i in range(20, 40)), "held by the ledger from call 20 on"

    contracts, m = services(db_url, spool)
    await contracts.start()
    await m.start()
    try:
        usage = await _rows(m)
        assert sorted(usage) == sorted(f"req{i}" for i in range(40))
        accruals = await _accruals(contracts)
        for cid in ("rs", "cm"):
            ids = [r for c, r, _ in accruals if c == cid]
            assert sorted(ids) == sorted(usage), f"{cid}: every answered call accrued once"
        costs = {rid: Decimal(nanos) / 10**9 for rid, nanos in usage.items()}
        assert sum(a for c, _, a in accruals if c == "cm") == sum(costs.values())
        assert sum(a for c, _, a in accruals if c == "rs") == sum(c * Decimal("0.15") for c in costs.values())
        assert contracts.totals["cm"].calls == 40 and contracts.totals["cm"].accrued == sum(costs.values())
    finally:
        await m.close()
        await contracts.close()
    assert list(spool.iterdir()) == [], "a clean stop: ledger flushed, then usage: nothing kept"


async def test_a_held_row_stays_until_the_holder_lets_it_go(tmp_path):
    spool = UsageSpool(str(tmp_path), "db1")
    spool.open()
    held: list[int] = []
    spool.hold = lambda: held[0] if held else None
    for i in range(5):
        spool.append(_row(f"r{i}"))
    (path,) = spool.files
    held.append(3)  # the holder still needs row 3 on
    spool.committed(5)  # the usage writer has all five
    assert Path(path).read_bytes().count(b"\n") == 1 + 5, "nothing let go while row 3 is held"
    held[:] = []
    spool.recheck()
    assert Path(path).read_bytes().count(b"\n") == 1, "cut back to its header"
    assert await spool.close() == 0


class _Watched(ContractsService):
    """The ledger, noting each call metering hands it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []

    def metered(self, m) -> None:
        self.seen.append(m.call.request_id)
        super().metered(m)


async def test_calls_reach_the_ledger_only_while_an_agreement_exists(sqlite_database, tmp_path):
    """No agreement: metering makes no MeteredCall for the ledger (it would drop it); one created at
    runtime (as the admin API does) is followed from the next call on."""
    url = sqlite_database()
    contracts = _Watched(parse_contracts({"flush_interval_s": 0.01}), url)
    m = _metering(url, tmp_path / "spool")
    m.hold_spool(contracts)
    await contracts.start()
    await m.start()
    try:
        assert not contracts.listening
        m.record(call("before"))
        assert contracts.seen == [] and contracts.enqueued == 0
        late = {"revenue_share": [{"id": "rs-late", "rate": "0.5", "starts_on": "2026-01-01", "ends_on": "2030-12-31"}]}
        await contracts.create_agreement(agreements_of(parse_contracts(late))[0], actor="test")
        assert contracts.listening
        m.record(call("after"))
        assert contracts.seen == ["after"]
        await contracts.flush()
        assert [(c, r) for c, r, _ in await _accruals(contracts)] == [("rs-late", "after")]
    finally:
        await m.close()
        await contracts.close()
