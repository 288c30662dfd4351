"""A task cancelled while its connection goes back to the pool (the pool's ROLLBACK of a transaction still
open on it; SQLAlchemy ran one after every COMMIT too, which is now skipped): the rollback finishes, the connection goes back whole, nothing is logged, and the task
still ends cancelled (storage/reset.py). Before, SQLAlchemy logged the interrupted reset with a traceback
into the gateway's log at shutdown, when a poller or a job was stopped at that moment."""

from __future__ import annotations

import asyncio
import logging

import pytest
import sqlalchemy as sa

from multihome.storage import reset
from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio


# SQLite only: on PostgreSQL the pool's rollback after a COMMIT does no I/O (SQLAlchemy's asyncpg adapter
# knows no transaction is open), so there is no await there for a cancellation to land on.


def _slow_rollbacks(monkeypatch, armed: asyncio.Event, rolling: asyncio.Event) -> None:
    """Once `armed`, the driver's ROLLBACK takes 0.3 s (a loaded machine), and says when it has begun."""
    import aiosqlite.core

    owner, name = aiosqlite.core.Connection, "rollback"
    real = getattr(owner, name)

    async def slow(self):
        if armed.is_set():
            rolling.set()
            await asyncio.sleep(0.3)
        return await real(self)

    monkeypatch.setattr(owner, name, slow)


async def _open_transaction(conn) -> None:
    """A transaction open on the driver's connection that SQLAlchemy's Connection does not know of."""
    await (await conn.get_raw_connection()).driver_connection.execute("BEGIN")


async def test_a_committed_write_goes_back_to_the_pool_without_a_rollback(sqlite_database, monkeypatch):
    """Nothing is open after a COMMIT: the pool's ROLLBACK (a hop to aiosqlite's thread) is skipped."""
    import aiosqlite.core

    engine = create_engine(sqlite_database())
    rollbacks: list[int] = []
    real = aiosqlite.core.Connection.rollback

    async def counted(self):
        rollbacks.append(1)
        return await real(self)

    try:
        async with engine.connect():  # the first connection's set-up (the dialect rolls back once then)
            pass
        monkeypatch.setattr(aiosqlite.core.Connection, "rollback", counted)
        for _ in range(3):
            conn = await engine.connect()
            async with conn.begin():
                await conn.execute(sa.text("SELECT 1"))
            await conn.close()
        assert rollbacks == []
        conn = await engine.connect()
        await _open_transaction(conn)
        await conn.close()
        assert rollbacks == [1], "an open transaction is still rolled back"
    finally:
        await engine.dispose()


async def test_a_task_cancelled_while_its_connection_rolls_back_gives_it_back_whole(
    sqlite_database, monkeypatch, caplog
):
    engine = create_engine(sqlite_database())
    armed, rolling = asyncio.Event(), asyncio.Event()
    after: list[str] = []

    async def read() -> None:
        # Closed in the task itself, as the stores' writes are, with a transaction still open on the driver's
        # connection (a COMMIT that failed, say): the pool rolls it back.
        conn = await engine.connect()
        try:
            async with conn.begin():
                await conn.execute(sa.text("SELECT 1"))
            await _open_transaction(conn)
            armed.set()
        finally:
            await conn.close()
        after.append("closed")
        await asyncio.sleep(30)  # where the cancellation lands

    try:
        with caplog.at_level(logging.DEBUG, logger="sqlalchemy.pool"):
            _slow_rollbacks(monkeypatch, armed, rolling)
            task = asyncio.create_task(read())
            await asyncio.wait_for(rolling.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        assert after == ["closed"], "the close returned; the cancellation came at the next await"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        pool = engine.pool
        assert pool.checkedout() == 0 and pool.checkedin() == 1, pool.status()  # back, not thrown away
        async with engine.connect() as conn:  # and usable
            assert (await conn.execute(sa.text("SELECT 2"))).scalar() == 2
    finally:
        await engine.dispose()


async def test_a_rollback_that_does_not_end_is_given_up_at_the_grace(sqlite_database, monkeypatch):
    """A database that stopped answering does not hold the cancelled task beyond `GRACE_S`."""
    engine = create_engine(sqlite_database())
    armed, rolling = asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(reset, "GRACE_S", 0.05)
    _slow_rollbacks(monkeypatch, armed, rolling)

    async def read() -> None:
        conn = await engine.connect()
        try:
            await _open_transaction(conn)
            armed.set()
        finally:
            await conn.close()

    try:
        task = asyncio.create_task(read())
        await asyncio.wait_for(rolling.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 0.25)  # before the 0.3 s rollback would have ended
    finally:
        await engine.dispose()
