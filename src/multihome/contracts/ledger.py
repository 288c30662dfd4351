"""The accrual ledger: append-only, idempotent, capped, exact.

One `apply(batch)` is one transaction (group commit). Inside it, for every contract the batch
touches (in id order, so two replicas never deadlock), the contract's `ledger_totals` row is locked
(PostgreSQL: SELECT ... FOR UPDATE; SQLite: the BEGIN IMMEDIATE write lock), accruals already on
record for (contract, request) are skipped, and each new accrual is clipped to what is left under
the cap. So the cap holds across any number of replicas, and a replay never counts twice.

A contract whose ledger cannot be read (its totals row, and an accrual to rebuild it from) has its part
of the batch kept in `ledger_held`, in the same transaction, and moved to the ledger (oldest first,
skipping what is on record) by the first transaction that can read it again (`apply_readable`'s `retry`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..config.contracts import Agreement, decode_agreement, encode_agreement
from ..storage import row_reads, rows
from ..storage.engine import PgBulkInsert, is_sqlite, write_connection
from ..storage.rows import RowProblem, Unreadable
from ..storage.sqlite_readers import SqliteReaders, read_whole, usable
from . import money
from .tables import contract_agreements, ledger_accruals, ledger_held, ledger_totals

UTC = dt.UTC
log = logging.getLogger("multihome.contracts")
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
        unheld: sa.ColumnElement[bool]
        if self._sqlite:
            unheld = ledger_held.c.request_id.in_(sa.select(sa.column("value")).select_from(sa.func.json_each(ids)))
        else:
            unheld = ledger_held.c.request_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
        self._unhold = sa.delete(ledger_held).where(ledger_held.c.contract_id == sa.bindparam("contract"), unheld)

    async def _insert_accruals(self, conn, rows: list[dict]) -> None:
        if self._sqlite:
            await conn.execute(sa.insert(ledger_accruals), rows)
            return
        await _PG_INSERT_ACCRUALS.run(conn, rows)  # PostgreSQL: inside this transaction

    async def _lock_totals(self, conn, ids: list[str], bad: list[Unreadable]) -> dict[str, Total]:
        """Read (and on PostgreSQL lock, in id order) the totals rows of `ids` that exist; one that cannot be
        read is reported in `bad`."""
        q = _TOTALS.where(ledger_totals.c.contract_id.in_(ids)).order_by(ledger_totals.c.contract_id)
        if not self._sqlite:
            q = q.with_for_update()
        return _totals((await conn.execute(q)).all(), bad)

    async def _rebuilt(
        self, conn, contract_id: str, cap: Decimal | None, until: dt.datetime | None = None
    ) -> Total | Unreadable:
        """A contract's totals as its accruals (those before `until`, if given) add up: the totals row is their
        running sum, kept in the same transactions. For a totals row that cannot be read, or a report as of a
        past time; the accrual that cannot be read, if one cannot."""
        c = ledger_accruals.c
        q = sa.select(c.request_id.label("id"), c.amount, c.requested, sa.type_coerce(c.at, sa.Text).label("at"))
        q = q.where(c.contract_id == contract_id)
        if until is not None:
            q = q.where(c.at < until)
        found = (await conn.execute(q.order_by(c.at, c.request_id))).all()
        bad: list[Unreadable] = []
        accruals = rows.convert(str(ledger_accruals.name), found, _accrual_parts, bad)
        if bad:
            return bad[0]
        accrued = requested = money.ZERO
        capped_at = None
        for at, amount, asked in accruals:
            accrued, requested = money.add(accrued, amount), money.add(requested, asked)
            if cap is not None and capped_at is None and accrued >= cap and asked > 0:
                capped_at = at
        return Total(contract_id, accrued, requested, len(accruals), capped_at)

    # -- writes ----------------------------------------------------------------------------------
    async def apply(self, batch: list[Pending]) -> dict[str, Total]:
        """Write one batch in one transaction. Returns the new totals of the contracts it touched.

        Safe to call again with the same batch (after an ambiguous failure): nothing counts twice.
        """
        changed, held = await self.apply_readable(batch, keep=False)
        if held:
            raise _unreadable(held[0][1], held[0][0])
        return changed

    async def apply_readable(
        self, batch: list[Pending], retry: Iterable[str] = (), *, keep: bool = True
    ) -> tuple[dict[str, Total], list[tuple[str, Unreadable]]]:
        """`apply`, writing what can be written: a contract whose totals row cannot be read has it rebuilt
        from its accruals (and rewritten: that mends it); one whose accruals cannot be read either has its
        part of the batch kept in `ledger_held` (`keep`; else left unwritten), returned with what is wrong,
        and the other contracts' are written. The held accruals of the contracts in `retry` are moved to
        the ledger, in this transaction, if it can be read now (else they stay held, and are returned)."""
        retry = sorted(set(retry))
        if not batch and not retry:
            return {}, []
        now = dt.datetime.now(UTC)
        held: list[tuple[str, Unreadable]] = []
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                touched = {p.contract_id for p in batch}
                ids = sorted(touched.union(retry)) if retry else sorted(touched)
                bad: list[Unreadable] = []
                totals = await self._lock_totals(conn, ids, bad)
                rebuilt: dict[str, Total] = {}
                for u in bad:
                    mine = [p for p in batch if p.contract_id == u.id]
                    cap = mine[0].cap if mine else await self._held_cap(conn, u.id)
                    total = await self._rebuilt(conn, u.id, cap)
                    if isinstance(total, Unreadable):
                        held.append((u.id, total))
                        continue
                    rebuilt[u.id] = totals[u.id] = total
                    log.error(
                        "contracts: ledger_totals %s cannot be read (%s); rebuilt from its %d accruals",
                        u.id,
                        u.problem,
                        total.calls,
                    )
                # Held accruals are read only once their ledger can be (not at every batch while it cannot),
                # and go first: they are older than the batch's, so a cap clips the later ones.
                ready = [c for c in retry if c not in {k for k, _ in held}]
                moved, unheld = await self._held_rows(conn, ready) if ready else ({}, [])
                held.extend(unheld)  # a held row that cannot be read: its contract waits
                batch = [p for ps in moved.values() for p in ps] + batch
                if held:
                    kept = {c for c, _ in held}
                    if keep:
                        await self._hold(conn, [p for p in batch if p.contract_id in kept], now)
                    batch = [p for p in batch if p.contract_id not in kept]
                    ids = [c for c in ids if c not in kept]
                # A contract's first accrual: create its totals row, then lock it (one retried with nothing
                # held and no row gets none).
                missing = [c for c in ids if c not in totals and (c in touched or c in moved)]
                if missing:
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
                    totals |= await self._lock_totals(conn, missing, bad)
                seen: set[tuple[str, str]] = set()
                for c in ids:
                    keys = sorted({p.request_id for p in batch if p.contract_id == c})
                    if not keys:
                        continue  # retried with nothing held
                    rows = await conn.execute(self._seen, {"contract": c, "ids": self._ids(keys)})
                    seen.update((c, r) for (r,) in rows.all())
                rows_out: list[dict[str, Any]] = []
                changed: dict[str, Total] = dict(rebuilt)  # written back below, with what this batch adds
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
                for c, ps in moved.items():  # on record now (or already were): no longer held
                    if c in ids:
                        await conn.execute(
                            self._unhold, {"contract": c, "ids": self._ids(sorted({p.request_id for p in ps}))}
                        )
        finally:
            await conn.close()
        return {**{c: totals[c] for c in ids if c in totals}, **changed}, held

    async def _held_cap(self, conn, contract_id: str) -> Decimal | None:
        """The cap a contract's held accruals were made under (for a rebuild with no new accrual)."""
        q = sa.select(ledger_held.c.cap).where(ledger_held.c.contract_id == contract_id).limit(1)
        cap = (await conn.execute(q)).scalar()
        try:
            return None if cap is None else _amount(cap)
        except Exception:  # the held row is reported when it is read; the rebuild's capped_at is only a time
            return None

    async def _held_rows(
        self, conn, contract_ids: list[str]
    ) -> tuple[dict[str, list[Pending]], list[tuple[str, Unreadable]]]:
        """The accruals held for `contract_ids` (ledger_held), in time order, by contract; and for a
        contract one of whose held rows cannot be read, that row (its contract's are left where they are)."""
        h = ledger_held.c
        q = sa.select(
            h.contract_id,
            h.request_id.label("id"),
            sa.type_coerce(h.at, sa.Text).label("at"),
            h.basis,
            h.requested,
            h.cap,
            h.price_version,
        ).where(h.contract_id.in_(contract_ids))
        by_contract: dict[str, list[Any]] = {}
        for r in (await conn.execute(q.order_by(h.at, h.request_id))).all():
            by_contract.setdefault(str(r.contract_id), []).append(r)
        out: dict[str, list[Pending]] = {}
        unreadable: list[tuple[str, Unreadable]] = []
        for c, found in by_contract.items():
            bad: list[Unreadable] = []
            held = rows.convert(str(ledger_held.name), found, _pending, bad)
            if bad:  # named as the report names an accrual: `ledger_held {contract}/{request}`
                unreadable.append((c, msgspec.structs.replace(bad[0], id=f"{c}/{bad[0].id}")))
            else:
                out[c] = held
        return out, unreadable

    async def _hold(self, conn, pending: list[Pending], now: dt.datetime) -> None:
        """Keep `pending` in ledger_held; one held twice (a replay, a retry) is kept once."""
        if not pending:
            return
        await conn.execute(
            self._insert(ledger_held).on_conflict_do_nothing(index_elements=["contract_id", "request_id"]),
            [
                dict(
                    contract_id=p.contract_id,
                    request_id=p.request_id,
                    at=p.at,
                    basis=money.text(p.basis),
                    requested=money.text(p.requested),
                    cap=None if p.cap is None else money.text(p.cap),
                    price_version=p.price_version,
                    held_at=now,
                )
                for p in pending
            ],
        )

    # -- reads -----------------------------------------------------------------------------------
    async def totals(self, contract_ids: Iterable[str] | None = None) -> dict[str, Total]:
        """The contracts' totals; UnreadableRow if one of them cannot be read (a report would be wrong)."""
        q = _TOTALS
        if contract_ids is not None:
            q = q.where(ledger_totals.c.contract_id.in_(list(contract_ids)))
        async with self.engine.connect() as conn:
            found = (await conn.execute(q)).all()
        bad: list[Unreadable] = []
        out = _totals(found, bad)
        if bad:
            raise _unreadable(bad[0], bad[0].id)
        return out

    async def total_before(self, contract_id: str, until: dt.datetime, cap: Decimal | None) -> Total | None:
        """The contract's totals as of `until` (its accruals before it), when it has accruals at or after it;
        None when it has none (the totals row, `totals`, is then the answer, and is read without a sum)."""
        c = ledger_accruals.c
        later = sa.select(c.request_id).where(c.contract_id == contract_id, c.at >= until).limit(1)
        async with self.engine.connect() as conn:
            if (await conn.execute(later)).first() is None:
                return None
            total = await self._rebuilt(conn, contract_id, cap, until)
        if isinstance(total, Unreadable):
            raise _unreadable(total, contract_id)
        return total

    async def accruals(
        self, contract_id: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[Accrual]:
        """Accruals of one contract in time order (`since` inclusive, `until` exclusive)."""
        c = ledger_accruals.c
        q = sa.select(
            c.contract_id,
            c.request_id.label("id"),
            sa.type_coerce(c.at, sa.Text).label("at"),
            c.basis,
            c.requested,
            c.amount,
            c.price_version,
        ).where(c.contract_id == contract_id)
        if since is not None:
            q = q.where(c.at >= since)
        if until is not None:
            q = q.where(c.at < until)
        async with self.engine.connect() as conn:
            found = (await conn.execute(q.order_by(c.at, c.request_id))).all()
        return _readable(found, _accrual, contract_id)

    async def accrued_between(self, contract_id: str, since: dt.datetime, until: dt.datetime) -> Decimal:
        c = ledger_accruals.c
        q = sa.select(c.request_id.label("id"), c.amount).where(
            c.contract_id == contract_id, c.at >= since, c.at < until
        )
        async with self.engine.connect() as conn:
            found = (await conn.execute(q)).all()
        return money.total(_readable(found, lambda r, fields: _amount(r.amount), contract_id))

    async def daily(self, contract_id: str, until: dt.datetime | None = None) -> list[tuple[dt.date, Decimal]]:
        """Accrued per UTC day (before `until`, if given), in day order (days without accruals are left out)."""
        c = ledger_accruals.c
        q = sa.select(c.request_id.label("id"), sa.type_coerce(c.at, sa.Text).label("at"), c.amount, c.requested)
        q = q.where(c.contract_id == contract_id)
        if until is not None:
            q = q.where(c.at < until)
        out: dict[dt.date, Decimal] = {}
        async with self.engine.connect() as conn:
            found = (await conn.execute(q.order_by(c.at))).all()
        for at, amount, _ in _readable(found, _accrual_parts, contract_id):
            day = at.date()
            out[day] = money.add(out.get(day, money.ZERO), amount)
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

    async def agreements(self) -> row_reads.Listed[Agreement]:
        """The stored agreements that can be read; `.unreadable` the others."""
        return (await read_whole(self._reads, self.engine, _agreements))[0]

    async def state(
        self,
    ) -> tuple[row_reads.Listed[Agreement], dict[str, Total], list[Unreadable], frozenset[str]]:
        """The stored agreements and every contract's totals, in one read (a replica's refresh), with the
        totals rows that cannot be read (the agreements' are in the list's `.unreadable`) and the contracts
        with accruals held (ledger_held: another replica's, or a process's before a restart)."""
        return await read_whole(self._reads, self.engine, _agreements_and_totals)

    async def close(self) -> None:
        if self._reads is not None:
            await self._reads.close()


# Built once: SQLAlchemy keeps a statement's cache key on the statement, so a reused one is not keyed again.
# JSON and timestamps are selected as stored text and decoded per row (storage/rows.py): a row the driver
# cannot decode would otherwise fail the read of them all, and with it every refresh and every accrual.
_AGREEMENTS = sa.select(
    contract_agreements.c.id, sa.type_coerce(contract_agreements.c.spec, sa.Text).label("spec")
).order_by(contract_agreements.c.id)
_HELD = sa.select(ledger_held.c.contract_id).distinct()
_TOTALS = sa.select(
    ledger_totals.c.contract_id.label("id"),
    ledger_totals.c.accrued,
    ledger_totals.c.requested,
    ledger_totals.c.calls,
    sa.type_coerce(ledger_totals.c.capped_at, sa.Text).label("capped_at"),
)


def _agreement(r: Any, fields: rows.Fields) -> Agreement:
    spec = json.loads(r.spec) if isinstance(r.spec, str) else r.spec
    a = decode_agreement(spec)
    if a.id != r.id:
        raise RowProblem("its spec names another id")
    return a


def _agreements(conn: Connection) -> tuple[row_reads.Listed[Agreement], None]:
    bad: list[Unreadable] = []
    out = row_reads.Listed(
        rows.convert(str(contract_agreements.name), conn.execute(_AGREEMENTS).all(), _agreement, bad)
    )
    out.unreadable = tuple(bad)
    return out, None


def _agreements_and_totals(
    conn: Connection,
) -> tuple[row_reads.Listed[Agreement], dict[str, Total], list[Unreadable], frozenset[str]]:
    agreements = _agreements(conn)[0]
    bad: list[Unreadable] = []
    held = frozenset(str(c) for (c,) in conn.execute(_HELD).all())
    return agreements, _totals(conn.execute(_TOTALS).all(), bad), bad, held


def _amount(value: Any) -> Decimal:
    """A stored amount (exact decimal text): a finite number, or RowProblem."""
    if not isinstance(value, str):
        raise RowProblem("an amount is not decimal text")
    amount = money.dec(value)  # InvalidOperation (reported by its name) for text that is not a number
    if not amount.is_finite():
        raise RowProblem("an amount is not a finite number")
    return amount


def _total(r: Any, fields: rows.Fields) -> Total:
    if type(r.calls) is not int:
        raise RowProblem("calls is not an integer")
    return Total(r.id, _amount(r.accrued), _amount(r.requested), r.calls, rows.stamp(r.capped_at))


def _totals(found: Sequence[Any], bad: list[Unreadable]) -> dict[str, Total]:
    return {t.contract_id: t for t in rows.convert(str(ledger_totals.name), found, _total, bad)}


def _accrual_parts(r: Any, fields: rows.Fields) -> tuple[dt.datetime, Decimal, Decimal]:
    return rows.stamp(r.at), _amount(r.amount), _amount(r.requested)


def _pending(r: Any, fields: rows.Fields) -> Pending:
    if not isinstance(r.id, str) or not isinstance(r.price_version, str):
        raise RowProblem("request_id or price_version is not text")
    cap = None if r.cap is None else _amount(r.cap)
    at, basis, requested = rows.stamp(r.at), _amount(r.basis), _amount(r.requested)
    return Pending(str(r.contract_id), r.id, at, basis, requested, cap, r.price_version)


def _accrual(r: Any, fields: rows.Fields) -> Accrual:
    at, amount, requested = _accrual_parts(r, fields)
    return Accrual(r.contract_id, r.id, at, _amount(r.basis), requested, amount, r.price_version)


def _readable(found: Sequence[Any], build: row_reads.Build, contract_id: str) -> list:
    """Every row of a report's read built, or UnreadableRow for the first that cannot be (a report that left
    an accrual out would be wrong, not partial)."""
    bad: list[Unreadable] = []
    out = rows.convert(str(ledger_accruals.name), found, build, bad)
    if bad:
        raise _unreadable(bad[0], contract_id)
    return out


def _unreadable(bad: Unreadable, contract_id: str) -> Exception:
    """UnreadableRow naming the contract and the row: `ledger_totals rs-1`, `ledger_accruals rs-1/req_…`."""
    row = bad.table + " " + (contract_id if bad.id == contract_id else f"{contract_id}/{bad.id}")
    return row_reads.unreadable("contract ledger", msgspec.structs.replace(bad, id=row))
