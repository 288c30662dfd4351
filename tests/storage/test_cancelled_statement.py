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
from multihome.storage.engine import create_engine, write_connection

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.parametrize(
    "statement", ["UPDATE t SET x = x + 1 RETURNING x", "SELECT x FROM t"], ids=["returning", "select"]
)
async def test_a_write_cancelled_as_its_rows_come_back_lets_go_of_the_write_lock(
    sqlite_database, monkeypatch, statement
):
    engine = create_engine(sqlite_database(migrated=False))
    landed = asyncio.Event()

    async def write() -> None:
        conn = await write_connection(engine)
        try:
            async with conn.begin():
                await conn.execute(sa.text(statement))
        finally:
            await conn.close()

    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (1), (2)"))
        hold_rows(monkeypatch, landed, lambda sql: sql == statement)
        with no_collection():
            task = asyncio.create_task(write())
            await asyncio.wait_for(landed.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            assert write_lock_free(str(engine.url.database)), "the cancelled write's connection still holds the lock"
    finally:
        await engine.dispose()
