"""A SQLite statement's rows held back on their way to the event loop, where a cancellation lands when it comes
then (storage/engine.py `_finish_statement`), and the garbage collector held off, as it is for long stretches in
the gateway (api/gateway.py `_tune_gc`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
from collections.abc import Callable, Iterator


def hold_rows(monkeypatch, landed: asyncio.Event, matches: Callable[[str], bool]) -> None:
    """The driver runs each statement `matches` accepts, then waits before handing its cursor back (`landed` set)."""
    import aiosqlite.cursor

    real = aiosqlite.cursor.Cursor.execute

    async def held(self, sql, parameters=None):
        done = await real(self, sql, parameters)
        if matches(sql):
            landed.set()
            await asyncio.sleep(30)
        return done

    monkeypatch.setattr(aiosqlite.cursor.Cursor, "execute", held)


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """No garbage collection inside; what was left for it is collected after."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        gc.collect()


def write_lock_free(path: str) -> bool:
    """Whether another connection takes the file's write lock (waiting up to 5 s for it)."""
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
