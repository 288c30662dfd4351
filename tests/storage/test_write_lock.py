"""A write on SQLite that waits out the busy timeout is warned of with who holds the write lock: the gateway's task or
thread in a write transaction, and for how long (storage/write_lock.py). SQLite says only "database is locked"."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from multihome.storage import engine as engine_module
from multihome.storage import write_lock
from multihome.storage.engine import create_engine, write_connection
from multihome.storage.sqlite_threads import SqliteThreads

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def short_busy_timeout(monkeypatch):
    """A busy timeout of 0.2 s for the engines made in the test, and no warning said yet."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(write_lock, "_said", {"at": -1e9, "unsaid": 0})


async def _table(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))


async def _write(engine) -> None:
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    finally:
        await conn.close()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "write lock" in r.getMessage()]


async def test_the_warning_names_the_task_in_a_write_transaction(sqlite_database, short_busy_timeout, caplog):
    engine = create_engine(sqlite_database(migrated=False))
    holding, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        conn = await write_connection(engine)
        try:
            async with conn.begin():
                await conn.execute(sa.text("INSERT INTO t VALUES (0)"))
                holding.set()
                await done.wait()
        finally:
            await conn.close()

    try:
        await _table(engine)
        holder = asyncio.create_task(hold(), name="the-holder")
        await asyncio.wait_for(holding.wait(), 10)
        with caplog.at_level(logging.WARNING, logger="multihome.storage"):
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                await asyncio.create_task(_write(engine), name="a-waiter")
        [said] = _warnings(caplog)
        assert said.startswith("SQLite: task a-waiter (_write) waited 0.2 s for the write lock and gave up"), said
        assert re.search(r"held by task the-holder \(.*hold\) for \d+\.\d s$", said), said
        done.set()
        await asyncio.wait_for(holder, 10)
        assert write_lock.describe() == [], "committed: no longer a holder"
        await _write(engine)
    finally:
        done.set()
        await engine.dispose()


async def test_the_warning_names_the_writer_thread_holding_the_lock(sqlite_database, short_busy_timeout, caplog):
    url = sqlite_database(migrated=False)
    engine = create_engine(url)
    threads = SqliteThreads(engine)
    holding, done = threading.Event(), threading.Event()

    def hold(raw: sqlite3.Connection) -> None:
        raw.execute("INSERT INTO t VALUES (0)")
        holding.set()
        done.wait(30)

    try:
        await _table(engine)
        held = asyncio.create_task(threads.write_raw(hold))
        assert await asyncio.to_thread(holding.wait, 10)
        with caplog.at_level(logging.WARNING, logger="multihome.storage"):
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                await _write(engine)
        [said] = _warnings(caplog)
        assert re.search(r"held by thread mh-sqlite-write for \d+\.\d s$", said), said
        done.set()
        await asyncio.wait_for(held, 10)
        await _write(engine)
    finally:
        done.set()
        await asyncio.to_thread(threads.close)
        await engine.dispose()


NO_HOLDER = "held by none of this process's connections (another process on the same file, or a commit being synced)"


def _waits_given_up(path: str, caplog, waits: int = 1) -> str:
    """The warning of `waits` writes of a connection of its own (as the writer threads' BEGIN IMMEDIATE) giving up on
    the lock, which another connection takes first (another process, as far as the gateway knows)."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="multihome.storage"):
            for _ in range(waits):
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    write_lock.begin_immediate(waiter, 60)
        assert not waiter.in_transaction
        [said] = _warnings(caplog)
        return said
    finally:
        waiter.close()
        holder.close()


async def test_a_thread_of_its_own_that_waits_out_the_timeout_is_warned_of_once_per_timeout(
    sqlite_database, short_busy_timeout, caplog
):
    """The usage writer's and state writer's own BEGIN IMMEDIATE; an outage fails every write: one line per timeout."""
    path = str(sa.engine.make_url(sqlite_database(migrated=False)).database)
    said = _waits_given_up(path, caplog, waits=3)
    assert said.endswith(NO_HOLDER), said


def _closed_mid_write(path: str) -> tuple[sqlite3.Connection, sqlite3.Cursor]:
    """A connection closed in its noted write transaction, and the cursor of its statement still stepping."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (1), (2)")
    write_lock.begin_immediate(conn, 1)
    stepping = conn.execute("UPDATE t SET x = x + 1 RETURNING x")
    conn.close()
    return conn, stepping


def test_a_connection_closed_in_its_write_transaction_is_named(tmp_path):
    """sqlite3 keeps such a connection's transaction, and the lock, while a statement of it is still stepping."""
    conn, stepping = _closed_mid_write(str(tmp_path / "z.db"))
    try:
        [named] = [d for d in write_lock.describe() if "closed" in d]
        assert "closed mid-transaction: it keeps the lock" in named, named
    finally:
        write_lock.ended(conn)
        del stepping


def test_a_connection_closed_in_its_write_transaction_with_no_cursor_left_is_forgotten(
    tmp_path, short_busy_timeout, caplog
):
    """Its last statement finalized, SQLite has closed it and rolled its transaction back (another connection takes
    the lock): a later warning does not name it, nor does the registry keep it."""
    _, stepping = _closed_mid_write(str(tmp_path / "z.db"))
    del stepping  # the last cursor: its statement finalized, the connection lets go of the lock
    said = _waits_given_up(str(tmp_path / "z.db"), caplog)
    assert said.endswith(NO_HOLDER), said
    assert write_lock._held == {}


async def test_an_invalidated_write_connection_is_not_named(sqlite_database):
    """SQLAlchemy closes an invalidated connection without a rollback event: its entry is a closed aiosqlite
    connection's, with no cursor left."""
    engine = create_engine(sqlite_database(migrated=False))
    try:
        await _table(engine)
        conn = await write_connection(engine)
        await conn.begin()
        await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert len(write_lock.describe()) == 1
        await conn.invalidate()
        await conn.close()
        assert write_lock.describe() == [] and write_lock._held == {}
        await _write(engine)
    finally:
        await engine.dispose()
