"""A task cancelled while its statement's rows are on their way back, inside a write transaction on SQLite (a job
claim's or lease renewal's UPDATE ... RETURNING when the worker stops, a read in a store's write): the write lock
is let go with the connection, not held by it until the garbage collector runs (storage/engine.py).

SQLAlchemy closes the connection the cancellation interrupted, but not its cursor; the sqlite3 module's close
(sqlite3_close_v2) leaves a connection with a statement still stepping open, transaction and write lock included,
until that statement is freed. The gateway collects garbage rarely (api/gateway.py `_tune_gc`): a stop once waited
out every later write's busy timeout, 35 s in all."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from held_rows import hold_rows, no_collection, write_lock_free
from multihome.storage import write_lock
from multihome.storage.engine import create_engine, write_connection

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


RETURNING = "UPDATE t SET x = x + 1 RETURNING x"


async def _table(sqlite_database):
    """An engine on a new file holding table t of two rows."""
    engine = create_engine(sqlite_database(migrated=False))
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        await conn.execute(sa.text("INSERT INTO t VALUES (1), (2)"))
    return engine


async def _write(engine, statement: str) -> None:
    """`statement` in a write transaction (BEGIN IMMEDIATE) of its own connection."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            await conn.execute(sa.text(statement))
    finally:
        await conn.close()


@pytest.mark.parametrize("statement", [RETURNING, "SELECT x FROM t"], ids=["returning", "select"])
async def test_a_write_cancelled_as_its_rows_come_back_lets_go_of_the_write_lock(
    sqlite_database, monkeypatch, statement
):
    engine = await _table(sqlite_database)
    landed = asyncio.Event()
    try:
        hold_rows(monkeypatch, landed, lambda sql: sql == statement)
        with no_collection():
            task = asyncio.create_task(_write(engine, statement))
            await asyncio.wait_for(landed.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            assert write_lock_free(str(engine.url.database)), "the cancelled write's connection still holds the lock"
    finally:
        await engine.dispose()


async def test_a_write_cancelled_again_while_its_cursor_closes_leaves_no_holder_named(sqlite_database, monkeypatch):
    """A second cancellation landing in `_finish_statement`'s wait for the cursor's close: the transaction is
    forgotten all the same (write_lock.py), not named as a holder in every later warning."""
    import aiosqlite.cursor

    engine = await _table(sqlite_database)
    landed, closing = asyncio.Event(), asyncio.Event()
    real_close = aiosqlite.cursor.Cursor.close

    async def slow_close(self) -> None:
        if not landed.is_set():  # the cursors of the statements before (BEGIN's)
            return await real_close(self)
        done = asyncio.ensure_future(real_close(self))  # queued on the connection's thread at once, as aiosqlite's
        closing.set()
        await asyncio.sleep(30)
        await done

    try:
        hold_rows(monkeypatch, landed, lambda sql: sql == RETURNING)
        monkeypatch.setattr(aiosqlite.cursor.Cursor, "close", slow_close)
        with no_collection():
            task = asyncio.create_task(_write(engine, RETURNING))
            await asyncio.wait_for(landed.wait(), 10)
            task.cancel()
            await asyncio.wait_for(closing.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            assert write_lock.describe() == [], "a cancelled write's transaction is still named as holding the lock"
            assert write_lock_free(str(engine.url.database)), "the cancelled write's connection still holds the lock"
    finally:
        await engine.dispose()
