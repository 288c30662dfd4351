"""The accrual ledger: append-only, idempotent, capped, exact.

One `apply(batch)` is one transaction (group commit). Inside it, for every contract the batch
touches (in id order, so two replicas never deadlock), the contract's `ledger_totals` row is locked
(PostgreSQL: SELECT ... FOR UPDATE; SQLite: the BEGIN IMMEDIATE write lock), accruals already on
record for (contract, request) are skipped, and each new accrual is clipped to what is left under
the cap. So the cap holds across any number of replicas, and a replay never counts twice.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..config.contracts import Agreement, decode_agreement, encode_agreement
from ..storage.base import as_utc
from ..storage.engine import PgBulkInsert, is_sqlite, write_connection
from ..storage.sqlite_readers import SqliteReaders, read_whole, usable
from . import money
from .tables import contract_agreements, ledger_accruals, ledger_totals

UTC = dt.UTC
_PG_INSERT_ACCRUALS = PgBulkInsert(ledger_accruals)
_UPDATE_TOTALS = (
    sa.update(ledger_totals)
    .where(ledger_totals.c.contract_id == sa.bindparam("cid"))
    .values(
        accrued=sa.bindparam("accrued"),
        requested=sa.bindparam("requested"),
        calls=sa.bindparam("calls"),
        capped_at=sa.bindparam("capped_at"),
        updated_at=sa.bindparam("updated_at"),
    )
)


@dataclass(frozen=True, slots=True)
class Pending:
    """An accrual waiting for the next group commit."""

    contract_id: str
    request_id: str
    at: dt.datetime  # UTC, when the call finished
    basis: Decimal  # metered cost
    requested: Decimal  # before the cap
    cap: Decimal | None
    price_version: str = ""
    spooled: int = 0  # the call's position in the usage spool, which keeps its row until this commits


@dataclass(frozen=True, slots=True)
class Total:
    contract_id: str
    accrued: Decimal
    requested: Decimal
    calls: int
    capped_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Accrual:
    contract_id: str
    request_id: str
    at: dt.datetime
    basis: Decimal
    requested: Decimal
    amount: Decimal
    price_version: str


class Ledger:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite = is_sqlite(engine)
        # A SQLite file: the periodic refresh (`state`) in one thread hand-off (storage/sqlite_readers.py).
        self._reads = SqliteReaders(engine, name="mh-contracts-read") if usable(engine) else None
        self._insert = sqlite.insert if self._sqlite else postgresql.insert
        # Which of a batch's requests are already on record: the ids travel as one parameter (a
        # JSON array on SQLite, an array on PostgreSQL), not one bound parameter per id.
        ids: sa.BindParameter[Any] = sa.bindparam("ids")
        listed: sa.ColumnElement[bool]
        self._ids: Callable[[list[str]], object]  # the ids as the one parameter's value
        if self._sqlite:
            listed = ledger_accruals.c.request_id.in_(sa.select(sa.column("value")).select_from(sa.func.json_each(ids)))
            self._ids = json.dumps
        else:
            listed = ledger_accruals.c.request_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
            self._ids = list
        self._seen = sa.select(ledger_accruals.c.request_id).where(
            ledger_accruals.c.contract_id == sa.bindparam("contract"), listed
        )

    async def _insert_accruals(self, conn, rows: list[dict]) -> None:
        if self._sqlite:
            await conn.execute(sa.insert(ledger_accruals), rows)
            return
        await _PG_INSERT_ACCRUALS.run(conn, rows)  # PostgreSQL: inside this transaction

    async def _lock_totals(self, conn, ids: list[str]) -> dict[str, Total]:
        """Read (and on PostgreSQL lock, in id order) the totals rows of `ids` that exist."""
        q = sa.select(ledger_totals).where(ledger_totals.c.contract_id.in_(ids)).order_by(ledger_totals.c.contract_id)
        if not self._sqlite:
            q = q.with_for_update()
        return {r.contract_id: _total(r) for r in (await conn.execute(q)).all()}

    # -- writes ----------------------------------------------------------------------------------
    async def apply(self, batch: list[Pending]) -> dict[str, Total]:
        """Write one batch in one transaction. Returns the new totals of the contracts it touched.

        Safe to call again with the same batch (after an ambiguous failure): nothing counts twice.
        """
        if not batch:
            return {}
        ids = sorted({p.contract_id for p in batch})
        now = dt.datetime.now(UTC)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                totals = await self._lock_totals(conn, ids)
                missing = [c for c in ids if c not in totals]
                if missing:  # a contract's first accrual: create its totals row, then lock it
                    await conn.execute(
                        self._insert(ledger_totals)
                        .values(
                            [
                                dict(contract_id=c, accrued="0", requested="0", calls=0, capped_at=None, updated_at=now)
                                for c in missing
                            ]
                        )
                        .on_conflict_do_nothing(index_elements=["contract_id"])
                    )
                    totals |= await self._lock_totals(conn, missing)
                seen: set[tuple[str, str]] = set()
                for c in ids:
                    keys = sorted({p.request_id for p in batch if p.contract_id == c})
                    rows = await conn.execute(self._seen, {"contract": c, "ids": self._ids(keys)})
                    seen.update((c, r) for (r,) in rows.all())
                rows_out: list[dict[str, Any]] = []
                changed: dict[str, Total] = {}
                for p in batch:
                    key = (p.contract_id, p.request_id)
                    if key in seen:
                        continue  # already on record: a replay or a retry
                    seen.add(key)
                    t = changed.get(p.contract_id) or totals[p.contract_id]
                    amount = p.requested
                    capped_at = t.capped_at
                    if p.cap is not None:
                        left = max(money.ZERO, money.sub(p.cap, t.accrued))
                        amount = min(amount, left)  # the crossing accrual is partial
                        if capped_at is None and money.add(t.accrued, amount) >= p.cap and p.requested > 0:
                            capped_at = p.at
                    changed[p.contract_id] = Total(
                        p.contract_id,
                        money.add(t.accrued, amount),
                        money.add(t.requested, p.requested),
                        t.calls + 1,
                        capped_at,
                    )
                    rows_out.append(
                        dict(
                            contract_id=p.contract_id,
                            request_id=p.request_id,
                            at=p.at,
                            basis=money.text(p.basis),
                            requested=money.text(p.requested),
                            amount=money.text(amount),
                            price_version=p.price_version,
                            recorded_at=now,
                        )
                    )
                if rows_out:
                    await self._insert_accruals(conn, rows_out)
                if changed:
                    await conn.execute(
                        _UPDATE_TOTALS,
                        [
                            dict(
                                cid=t.contract_id,
                                accrued=money.text(t.accrued),
                                requested=money.text(t.requested),
                                calls=t.calls,
                                capped_at=t.capped_at,
                                updated_at=now,
                            )
                            for t in changed.values()
                        ],
                    )
        finally:
            await conn.close()
        return {**{c: totals[c] for c in ids}, **changed}

    # -- reads -----------------------------------------------------------------------------------
    async def totals(self, contract_ids: Iterable[str] | None = None) -> dict[str, Total]:
        q = sa.select(ledger_totals)
        if contract_ids is not None:
            q = q.where(ledger_totals.c.contract_id.in_(list(contract_ids)))
        async with self.engine.connect() as conn:
            return {r.contract_id: _total(r) for r in (await conn.execute(q)).all()}

    async def accruals(
        self, contract_id: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[Accrual]:
        """Accruals of one contract in time order (`since` inclusive, `until` exclusive)."""
        c = ledger_accruals.c
        q = sa.select(ledger_accruals).where(c.contract_id == contract_id)
        if since is not None:
            q = q.where(c.at >= since)
        if until is not None:
            q = q.where(c.at < until)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(c.at, c.request_id))).all()
        return [
            Accrual(
                r.contract_id,
                r.request_id,
                as_utc(r.at),
                money.dec(r.basis),
                money.dec(r.requested),
                money.dec(r.amount),
                r.price_version,
            )
            for r in rows
        ]

    async def accrued_between(self, contract_id: str, since: dt.datetime, until: dt.datetime) -> Decimal:
        c = ledger_accruals.c
        q = sa.select(c.amount).where(c.contract_id == contract_id, c.at >= since, c.at < until)
        async with self.engine.connect() as conn:
            return money.total(money.dec(a) for (a,) in (await conn.execute(q)).all())

    async def daily(self, contract_id: str) -> list[tuple[dt.date, Decimal]]:
        """Accrued per UTC day, in day order (days without accruals are left out)."""
        c = ledger_accruals.c
        q = sa.select(c.at, c.amount).where(c.contract_id == contract_id).order_by(c.at)
        out: dict[dt.date, Decimal] = {}
        async with self.engine.connect() as conn:
            for at, amount in (await conn.execute(q)).all():
                day = as_utc(at).date()
                out[day] = money.add(out.get(day, money.ZERO), money.dec(amount))
        return sorted(out.items())

    # -- agreements created through the admin API -----------------------------------------------
    async def create_agreement(self, a: Agreement, *, actor: str) -> None:
        """Store an agreement. Raises sqlalchemy IntegrityError if the id is taken."""
        spec = encode_agreement(a)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await conn.execute(
                    sa.insert(contract_agreements).values(
                        id=a.id, kind=spec["kind"], spec=spec, actor=actor, created_at=dt.datetime.now(UTC)
                    )
                )
        finally:
            await conn.close()

    async def agreements(self) -> list[Agreement]:
        return (await read_whole(self._reads, self.engine, _agreements))[0]

    async def state(self) -> tuple[list[Agreement], dict[str, Total]]:
        """The stored agreements and every contract's totals, in one read (a replica's refresh)."""
        return await read_whole(self._reads, self.engine, _agreements_and_totals)

    async def close(self) -> None:
        if self._reads is not None:
            await self._reads.close()


# Built once: SQLAlchemy keeps a statement's cache key on the statement, so a reused one is not keyed again.
_AGREEMENTS = sa.select(contract_agreements.c.spec).order_by(contract_agreements.c.id)
_TOTALS = sa.select(ledger_totals)


def _agreements(conn: Connection) -> tuple[list[Agreement], None]:
    return [decode_agreement(spec) for (spec,) in conn.execute(_AGREEMENTS).all()], None


def _agreements_and_totals(conn: Connection) -> tuple[list[Agreement], dict[str, Total]]:
    agreements = _agreements(conn)[0]
    return agreements, {r.contract_id: _total(r) for r in conn.execute(_TOTALS).all()}


def _total(r) -> Total:
    return Total(r.contract_id, money.dec(r.accrued), money.dec(r.requested), int(r.calls), as_utc(r.capped_at))
