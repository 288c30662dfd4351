"""One async SQLAlchemy engine per database URL, with the settings each backend needs.

SQLite (the embedded default) runs in WAL mode with foreign keys on, a busy timeout, and
SQLAlchemy (not the sqlite3 module) emitting BEGIN, so that a write transaction can ask for
`BEGIN IMMEDIATE` (take the write lock up front instead of failing on a lock upgrade); each such write transaction
is noted in write_lock.py, which names the holders when a write waits out the busy timeout. A statement whose await
is cancelled has its cursor closed before its connection (`_finish_statement`), so the connection lets go of the
lock when it closes. PostgreSQL goes through asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

from sqlalchemy import create_engine as create_engine_sync
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from . import write_lock
from .reset import finish_resets

SQLITE_BUSY_TIMEOUT_MS = 10_000
# PostgreSQL: a server that stops answering (hung, paused, a network path that drops packets) ends a connect
# or a statement with a TimeoutError (an outage: errors.unavailable) instead of holding its caller for ever.
PG_CONNECT_TIMEOUT_S = 10.0
PG_STATEMENT_TIMEOUT_S = 30.0
IMMEDIATE = "multihome_immediate"  # execution option: on SQLite, begin with BEGIN IMMEDIATE


def normalize_url(url: str) -> URL:
    """Accept `sqlite:///f.db`, `postgresql://...` and plain paths; pick the async drivers."""
    if "://" not in url:
        url = f"sqlite:///{url}"
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    if u.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(
            f"unsupported database URL scheme {u.drivername!r}: use sqlite+aiosqlite:///path or "
            "postgresql+asyncpg://user@host/db"
        )
    return u


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, statement_timeout_s: float | None = PG_STATEMENT_TIMEOUT_S) -> AsyncEngine:
    """`statement_timeout_s` (PostgreSQL): how long a statement may wait for the server's answer; None for
    work that may rightly take longer (a migration, which may also wait for another replica's)."""
    u = normalize_url(url)
    # The pool's rollback of a connection given back is done by storage/reset.py, to its end.
    if u.drivername == "sqlite+aiosqlite":
        _sqlite_directory(u)
        engine = (
            create_async_engine(u, pool_size=5, max_overflow=15, pool_timeout=30, pool_reset_on_return=None)
            if not _memory(u)
            else (create_async_engine(u, pool_reset_on_return=None))
        )
        _configure_sqlite(engine)
    else:
        # use_insertmanyvalues=False: a many-row INSERT goes to asyncpg's executemany (one prepared
        # statement, rows encoded in C) instead of a multi-VALUES statement rendered, bound and parsed
        # anew for every batch size (the ledger writer spent ~30% more CPU that way).
        engine = create_async_engine(
            u,
            pool_size=5,
            max_overflow=15,
            pool_timeout=30,
            pool_pre_ping=True,
            use_insertmanyvalues=False,
            pool_reset_on_return=None,
            connect_args={"timeout": PG_CONNECT_TIMEOUT_S, "command_timeout": statement_timeout_s},
        )
    finish_resets(engine)
    return engine


def _memory(u: URL) -> bool:
    return u.database in (None, "", ":memory:")


def _sqlite_directory(u: URL) -> None:
    """SQLite creates the file, not its directory; sqlite3 then says only "unable to open database file".
    Name the path instead, and the slashes: `sqlite+aiosqlite:///var/x.db` is `var/x.db` in the working
    directory, an absolute path takes four (`sqlite+aiosqlite:////var/x.db`)."""
    if _memory(u) or (u.database or "").startswith("file:"):
        return
    path = Path(u.database or "")
    if not path.parent.is_dir():
        where = path if path.is_absolute() else Path.cwd() / path
        raise ValueError(
            f"cannot open the SQLite database {where}: its directory {where.parent} does not exist. Create it, or "
            "fix the URL: sqlite+aiosqlite:///relative/path.db is relative to the working directory, "
            "sqlite+aiosqlite:////absolute/path.db (four slashes) is absolute."
        )


def create_sync_sqlite_engine(engine: AsyncEngine) -> Engine:
    """A synchronous engine (the sqlite3 module) on the same SQLite file, with the same settings, for
    work done on threads of its own (storage/sqlite_threads.py): one thread hop per unit of work
    instead of one per driver call."""
    sync = create_engine_sync(engine.url.set(drivername="sqlite+pysqlite"), poolclass=NullPool)
    _configure_sqlite(sync)
    return sync


def _configure_sqlite(engine: AsyncEngine | Engine) -> None:
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(target, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # runs once per new pooled connection
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, see _on_begin
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _ensure_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")  # admin changes are rare; survive power loss
        cur.close()

    @event.listens_for(target, "begin")
    def _on_begin(conn) -> None:
        if conn.get_execution_options().get(IMMEDIATE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            write_lock.began(conn.connection.driver_connection)
        else:
            conn.exec_driver_sql("BEGIN")

    @event.listens_for(target, "commit")
    @event.listens_for(target, "rollback")
    def _on_end(conn) -> None:
        if not (conn.invalidated or conn.closed):
            write_lock.ended(conn.connection.driver_connection)

    @event.listens_for(target, "handle_error")
    def _on_error(ctx) -> None:
        if isinstance(ctx.original_exception, asyncio.CancelledError) and ctx.execution_context is not None:
            _finish_statement(ctx)
        else:  # a write that gave up on the lock: the warning names who holds it
            write_lock.waited_out(ctx.original_exception, SQLITE_BUSY_TIMEOUT_MS / 1000)


def _finish_statement(ctx) -> None:
    """A statement's await cancelled (on the async engine): its cursor is closed before its connection is.

    SQLAlchemy closes the connection (invalidated: a cancellation may have left it anywhere) but not the cursor, and
    the cursor of a statement that returns rows still holds it stepping (UPDATE ... RETURNING, a SELECT). sqlite3
    closes with sqlite3_close_v2, which leaves such a connection open, its transaction and SQLite's write lock
    with it, until the cursor is freed, by the garbage collector (the traceback holding it is a cycle), which the
    gateway runs rarely: every other write waited out the busy timeout. The cursor's close is queued on the
    connection's thread ahead of the connection's, so it runs even if this wait is cancelled again. The
    transaction is forgotten first (the connection's close rolls it back): a second cancellation ends this wait."""
    if ctx.connection is not None and not (ctx.connection.invalidated or ctx.connection.closed):
        write_lock.ended(ctx.connection.connection.driver_connection)
    with contextlib.suppress(Exception):  # a connection closed already: nothing of it is left to close
        ctx.execution_context.cursor.close()


def _ensure_wal(cur) -> None:
    """WAL is stored in the database file, so only the first connection ever switches. The switch
    needs an exclusive lock and SQLite answers 'database is locked' at once, without the busy
    handler, while another connection (another process starting on the same file) holds any lock;
    so it is retried until the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        cur.execute("PRAGMA journal_mode")
        if str(cur.fetchone()[0]).lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def write_connection(engine: AsyncEngine) -> AsyncConnection:
    """A connection whose next transaction is a write transaction (BEGIN IMMEDIATE on SQLite)."""
    conn = await engine.connect()
    return await conn.execution_options(**{IMMEDIATE: True})


class PgBulkInsert:
    """Many rows into one PostgreSQL table through asyncpg's executemany (atomic; rows encoded in C).
    SQLAlchemy's per-row parameter processing on top of it cost more than the driver's whole insert
    (usage writer: 21.6 -> 15.2 µs per row, measured A/B)."""

    def __init__(self, table, *, on_conflict_do_nothing: bool = False) -> None:
        self.columns = [c.name for c in table.columns]
        marks = ", ".join(f"${i}" for i in range(1, len(self.columns) + 1))
        self.sql = f"INSERT INTO {table.name} ({', '.join(self.columns)}) VALUES ({marks})" + (
            " ON CONFLICT DO NOTHING" if on_conflict_do_nothing else ""
        )

    async def run(self, conn: AsyncConnection, rows: list[dict]) -> None:
        """Inside `conn`'s transaction if it has one begun, else as one transaction of its own."""
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None  # None only for a connection already invalidated
        cols = self.columns
        await driver.executemany(self.sql, [tuple(row[c] for c in cols) for row in rows])
