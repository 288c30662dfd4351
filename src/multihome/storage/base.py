"""Store plumbing shared by the repositories: transactions, the change record, row conversion."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..schema import admin_fields as fields
from .engine import is_sqlite, write_connection
from .errors import Conflict, Invalid, NotFound
from .ids import new_id
from .pg_reads import HeldReads
from .sqlite_readers import ReadersClosed, SqliteReaders, read_whole, usable
from .tables import admin_events, api_keys, snapshot_changes, state_version, teams, tenants

_BUMP = sa.update(state_version).where(state_version.c.id == 1).values(version=state_version.c.version + 1)
_VERSION = sa.select(state_version.c.version).where(state_version.c.id == 1)
_VERSION_SQL = "SELECT version FROM state_version WHERE id = 1"
_SEQ = "multihome_seq"  # conn.info: the version this write transaction bumped the counter to
# snapshot_changes rows kept: a replica more than this many versions behind reloads everything. Pruned
# once every CHANGES_PRUNE_EVERY versions, by the writer that reaches a multiple of it.
CHANGES_KEPT = 20_000
CHANGES_PRUNE_EVERY = 1_000
T = TypeVar("T")

if TYPE_CHECKING:
    from .rows import Fields, Unreadable


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """Read side: SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_stamp(value: datetime) -> str:
    """'2026-12-03 03:37:39.123456', as SQLAlchemy's SQLite DateTime stores it (naive UTC): for rows
    written on the sqlite3 connection itself, read back by either."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def to_utc(value: datetime | None, what: str) -> datetime | None:
    """Write side: refuse naive datetimes rather than guess their zone, and times out of range."""
    if value is None:
        return None
    checked(fields.moment(value, what))
    return value.astimezone(UTC)


def checked(problem: fields.Problem | None) -> None:
    """Raise Invalid (with the field path) for a problem found by schema.admin_fields."""
    if problem is not None:
        raise Invalid(problem.message, field=problem.field)


def nonempty(value: str, what: str, max_len: int = fields.NAME_MAX, *, required: bool = True) -> str:
    """A stored string within the field limits (docs/storage.md "Field limits"), else Invalid."""
    checked(fields.text(value, what, max_len=max_len, required=required))
    return value


async def refuse_past(
    conn: AsyncConnection, table: sa.Table, where: tuple[Any, ...], most: int, tenant_id: str, what: str, advice: str
) -> None:
    """A per-tenant cap on what every replica holds (docs/storage.md): Invalid (a 400) when the rows of `table`
    matching `where` are already `most`. Run in the write, under the tenant's lock, before the insert."""
    held = await conn.scalar(sa.select(sa.func.count()).select_from(table).where(*where))
    if held is not None and held >= most:
        raise Invalid(f"tenant {tenant_id} already holds {held} {what}, the most a tenant may hold ({most}); {advice}")


def advisory_lock_id(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def hold_lock(conn: AsyncConnection, name: str) -> None:
    """PostgreSQL: hold the advisory lock `name` to the end of `conn`'s transaction, so check-then-insert under
    the same name is race-free (SQLite's BEGIN IMMEDIATE already serializes every write)."""
    if conn.dialect.name != "sqlite":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_lock_id(name))))


class StoreBase:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite = is_sqlite(engine)
        # A SQLite file: short reads (the change counter, polled by every replica) in one thread
        # hand-off each (sqlite_readers.py); the thread is made at the first such read.
        self._readers = SqliteReaders(engine) if usable(engine) else None
        # PostgreSQL: the change counter alone on a held connection, one round trip per poll instead of the
        # engine's six (pre-ping's three, BEGIN, the read, ROLLBACK: storage/pg_reads.py).
        self._pg_reads = HeldReads(engine, size=1) if not self._sqlite else None

    @asynccontextmanager
    async def _write(self, lock: str | None = None) -> AsyncIterator[AsyncConnection]:
        """One write transaction. SQLite: BEGIN IMMEDIATE (the database write lock, so every write
        is serialized). PostgreSQL: READ COMMITTED plus, if `lock` is given, a transaction-scoped
        advisory lock on it taken first, so check-then-insert under the same lock is race-free."""
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                conn.info.pop(_SEQ, None)  # info outlives the checkout: a failed write's seq must not stay
                if lock is not None:
                    await hold_lock(conn, lock)
                yield conn
                seq = conn.info.pop(_SEQ, None)
                if seq is not None:
                    await _stamp_changes(conn, seq)
        except IntegrityError as exc:
            raise Conflict(f"the change conflicts with stored data: {exc.orig}") from exc
        finally:
            await conn.close()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def _record(
        self,
        conn: AsyncConnection,
        *,
        actor: str,
        tenant_id: str | None,
        action: str,
        object_type: str,
        object_id: str,
        detail: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        """Bump state_version and write the admin event, inside the caller's transaction."""
        nonempty(actor, "actor")
        await conn.execute(_BUMP)
        seq = (await conn.execute(_VERSION)).scalar_one()
        conn.info[_SEQ] = seq  # `_write` stamps the transaction's snapshot_changes with it before the commit
        await conn.execute(
            sa.insert(admin_events).values(
                seq=seq,
                id=new_id("evt"),
                at=at or utcnow(),
                actor=actor,
                tenant_id=tenant_id,
                action=action,
                object_type=object_type,
                object_id=object_id,
                detail=detail or {},
            )
        )
        return seq

    async def _revoke(
        self,
        table: sa.Table,
        object_type: str,
        tenant_id: str,
        object_id: str,
        *,
        actor: str,
        build: Callable[[Any, Fields], T],
        detail: Callable[[T], dict[str, Any]],
    ) -> T | Unreadable:
        """Set `revoked_at` on a tenant's row and record `<object_type>.revoke` with `detail(record)`; a row
        revoked already is returned as it is, with no event (revoking is idempotent). The record afterwards,
        `build` from the row; a row that cannot be read is revoked too (that mends it), and what is wrong
        with it is returned instead."""
        from .row_reads import either, is_live, one  # row_reads -> rows -> base: imported when first used

        where = (table.c.tenant_id == tenant_id, table.c.id == object_id)
        q = sa.select(table).where(*where)
        async with self._write() as conn:
            record, bad = await one(conn, q, table, build)
            if record is None and bad is None:
                raise NotFound(object_type.replace("_", " "), object_id, tenant_id)
            if not await is_live(conn, table, where):  # asked in SQL: revoked_at may be what cannot be decoded
                return either(record, bad)
            now = utcnow()
            await conn.execute(sa.update(table).where(*where).values(revoked_at=now))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action=f"{object_type}.revoke",
                object_type=object_type,
                object_id=object_id,
                detail=detail(record) if record is not None else {"unreadable": bad.problem if bad else ""},
                at=now,
            )
            record, bad = await one(conn, q, table, build)
            return either(record, bad)

    async def _require_tenant(self, conn: AsyncConnection, tenant_id: str) -> None:
        if await conn.scalar(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)) is None:
            raise NotFound("tenant", tenant_id)

    async def _require_scope(self, conn: AsyncConnection, tenant_id: str, scope: str, scope_id: str, what: str) -> None:
        """A tenant/team/key scope names this tenant, or a team or key of it (else Invalid/NotFound)."""
        if scope == "tenant":
            if scope_id != tenant_id:
                raise Invalid(f"a tenant-scoped {what}'s scope_id must be the tenant id {tenant_id}")
            return
        table = teams if scope == "team" else api_keys
        found = await conn.scalar(sa.select(table.c.id).where(table.c.tenant_id == tenant_id, table.c.id == scope_id))
        if found is None:
            raise NotFound("team" if scope == "team" else "api key", scope_id, tenant_id)

    async def version(self) -> int:
        """The change counter: one single-row read. Bumped by every committed mutation."""
        if self._readers is not None:
            try:
                return await self._readers.read(_read_version)
            except ReadersClosed:
                pass  # closed: through the engine, which a disposed engine still serves
        if self._pg_reads is not None:
            rows = await self._pg_reads.fetch(_VERSION, {})
            if not rows:
                raise RuntimeError("state_version has no row: the database is not migrated")
            return int(rows[0][0])
        async with self._read() as conn:
            return (await conn.execute(_VERSION)).scalar_one()

    async def _read_whole(self, work: Callable[[Connection], T]) -> T:
        """`work` on a SQLite reader thread (one hop), or run through the async engine."""
        return await read_whole(self._readers, self.engine, work)

    async def close_readers(self) -> None:
        if self._readers is not None:
            await self._readers.close()
        if self._pg_reads is not None:
            await self._pg_reads.close()


async def _stamp_changes(conn: AsyncConnection, seq: int) -> None:
    """Stamp the snapshot_changes rows no transaction stamped yet (this one's, and any a write that bumped
    nothing committed before it) with `seq`. Run after the bump, so under the counter's row lock to the
    commit: the stamps are in commit order, and a replica that read version `seq` finds all of them."""
    await conn.execute(sa.update(snapshot_changes).where(snapshot_changes.c.seq.is_(None)).values(seq=seq))
    if seq % CHANGES_PRUNE_EVERY == 0 and seq > CHANGES_KEPT:
        kept_from = seq - CHANGES_KEPT
        await conn.execute(sa.delete(snapshot_changes).where(snapshot_changes.c.seq < kept_from))
        await conn.execute(sa.update(state_version).where(state_version.c.id == 1).values(changes_from=kept_from))


def _read_version(conn: Connection) -> int:
    raw = conn.connection.dbapi_connection  # autocommit (engine.py): no transaction left open
    assert raw is not None  # a connection of our own, never invalidated
    row = raw.execute(_VERSION_SQL).fetchone()
    if row is None:
        raise RuntimeError("state_version has no row: the database is not migrated")
    return int(row[0])
