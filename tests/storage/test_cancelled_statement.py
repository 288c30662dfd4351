"""A task cancelled while its statement's rows are on their way back, inside a write transaction on SQLite (a job
claim's or lease renewal's UPDATE ... RETURNING when the worker stops, a read in a store's write): the write lock
is let go with the connection, not held by it until the garbage collector runs (storage/engine.py).

SQLAlchemy closes the connection the cancellation interrupted, but not its cursor; the sqlite3 module's close
(sqlite3_close_v2) leaves a connection with a statement still stepping open, transaction and write lock included,
until that statement is freed. The gateway collects garbage rarely (api/gateway.py `_tune_gc`): a stop once waited
out every later write's busy timeout, 35 s in all."""

from __future__ import annotations

import asyncio
import gc
import sqlite3

import pytest
import sqlalchemy as sa

from multihome.storage.engine import create_engine, write_connection

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _rows_held_back(monkeypatch, landed: asyncio.Event) -> None:
    """The driver's execute of the test's statements runs, then waits before handing its cursor back: where a
    cancellation lands when it comes as the rows travel back to the event loop (a busy loop makes that wait long)."""
    import aiosqlite.cursor

    real = aiosqlite.cursor.Cursor.execute

    async def held(self, sql, parameters=None):
        done = await real(self, sql, parameters)
        if " t " in f"{sql} ":
            landed.set()
            await asyncio.sleep(30)
        return done

    monkeypatch.setattr(aiosqlite.cursor.Cursor, "execute", held)


def _write_lock_free(path: str) -> bool:
    """Whether another connection takes the write lock (waiting up to 5 s for it)."""
    other = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc), exc
        return False
    finally:
        other.close()


@pytest.mark.parametrize(
    "statement", ["UPDATE t SET x = x + 1 RETURNING x", "SELECT x FROM t"], ids=["returning", "select"]
)
async def test_a_write_cancelled_as_its_rows_come_back_lets_go_of_the_write_lock(
    sqlite_database, monkeypatch, statement
):
    url = sqlite_database(migrated=False)
    engine = create_engine(url)
    landed = asyncio.Event()

    async def write() -> None:
        conn = await write_connection(engine)
        try:
            async with conn.begin():
                await conn.execute(sa.text(statement))
        finally:
            await conn.close()

    collecting = gc.isenabled()
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (1), (2)"))
        _rows_held_back(monkeypatch, landed)
        gc.disable()  # as in the gateway, where a collection may be many seconds away
        task = asyncio.create_task(write())
        await asyncio.wait_for(landed.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert _write_lock_free(str(engine.url.database)), "the cancelled write's connection still holds the lock"
    finally:
        if collecting:
            gc.enable()
        gc.collect()
        await engine.dispose()
