"""A pooled connection's reset (the ROLLBACK as it goes back to the pool) finishes, even when the task
giving it back is cancelled meanwhile.

SQLAlchemy rolls back a connection given back with its transaction still open (a read's implicit BEGIN).
On the async drivers that rollback is an await, and a task cancelled just then (a poller stopped at
shutdown, a job handed back, a call ended at the drain deadline) interrupted it: the pool logged the
interrupted reset as an ERROR with a traceback, "Exception during reset or similar", and threw the
connection away. On a loaded machine, where each hop to the driver's thread takes longer, a stop landed
there often enough to fail a test of a clean shutdown.

So the pool leaves the reset to `finish_resets` (`pool_reset_on_return=None`): the rollback runs in a
task of its own, a cancellation of the caller waits for it (at most `GRACE_S`: a database that stopped
answering must not hold a shutdown), and is let through at the caller's next await. A rollback that
fails is the pool's to handle, as before (logged, the connection invalidated).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolResetState
from sqlalchemy.util.concurrency import await_, greenlet_spawn

GRACE_S = 5.0  # how long a cancelled caller waits for its connection's rollback


def finish_resets(engine: AsyncEngine) -> None:
    """Roll back connections given back to `engine`'s pool (made with `pool_reset_on_return=None`)."""
    sqlite = engine.dialect.name == "sqlite"

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        # Outside the greenlet (garbage collection) no I/O can run; the pool only terminates then.
        if state.transaction_was_reset or state.terminate_only or not state.asyncio_safe:
            return
        if not _in_transaction(dbapi_connection.driver_connection):
            # Nothing to roll back (a write committed: the usual return). On SQLite the pool's ROLLBACK was a
            # hop to aiosqlite's thread for nothing; asyncpg's adapter is still asked, for its own transaction
            # object, which it clears without I/O when none was begun.
            if not sqlite:
                dbapi_connection.rollback()
            return
        await_(whole(greenlet_spawn(dbapi_connection.rollback)))


def _in_transaction(driver: Any) -> bool:
    """Whether the driver's connection is inside a transaction (unknown: assume so)."""
    if hasattr(driver, "is_in_transaction"):  # asyncpg
        return bool(driver.is_in_transaction())
    return bool(getattr(driver, "in_transaction", True))  # aiosqlite (sqlite3's view: autocommit or not)


async def whole(work: Coroutine[Any, Any, Any]) -> None:
    """Await `work` to its end in a task of its own; a cancellation meanwhile comes after it."""
    inner = asyncio.ensure_future(work)
    try:
        await asyncio.shield(inner)
        return
    except asyncio.CancelledError:
        caller = asyncio.current_task()
        if caller is None:
            raise
    try:
        done, _ = await asyncio.wait({inner}, timeout=GRACE_S)
    except asyncio.CancelledError:  # cancelled once more: the caller will not wait
        inner.cancel()
        raise
    if not done:
        inner.cancel()
        raise asyncio.CancelledError
    # The cancellation swallowed above is asked for again: the caller sees it at its next await, once its
    # connection is back in the pool. (uncancel first: asyncio.timeout counts the requests.)
    caller.uncancel()
    caller.cancel()
    inner.result()  # a rollback that failed: the pool logs it and drops the connection, as it always did
