"""The change counter of a SQLite store, read in one thread hand-off.

Every replica polls `state_version` (storage/snapshot.py, every `storage.refresh_s`, 0.25 s by
default) whether or not anything changed. Through the async engine one such read is a pool
checkout, an execute, a fetch and the pool's reset, each a hop to aiosqlite's thread and back:
measured, ~25 context switches and ~1.1 ms of CPU per read, ~100 wake-ups a second of an idle
gateway, more under load, when each hop also waits for the interpreter. Here the read runs whole
on a thread of its own with its own sqlite3 connection (the same settings as every other: WAL, busy
timeout): one hop there and one back. WAL readers never wait for writers, so a read sees the last
commit of any connection, as before.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import create_sync_sqlite_engine

_SQL = "SELECT version FROM state_version WHERE id = 1"


class VersionReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._thread: ThreadPoolExecutor | None = None  # made at the first read (again after a close)
        self._conn: tuple[Any, Any] | None = None  # (sync engine, its connection): the thread's only

    @staticmethod
    def usable(engine: AsyncEngine) -> bool:
        """A SQLite file: another connection sees the same database (an in-memory one it would not)."""
        url = engine.url
        return (
            engine.dialect.name == "sqlite"
            and url.database not in (None, "", ":memory:")
            and url.query.get("mode") != "memory"
        )

    async def read(self) -> int:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="mh-version-read")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read)

    def _read(self) -> int:
        if self._conn is None:
            sync = create_sync_sqlite_engine(self._engine)
            try:
                self._conn = (sync, sync.connect())
            except BaseException:
                sync.dispose()
                raise
        raw = self._conn[1].connection.dbapi_connection  # autocommit (engine.py): no transaction left open
        assert raw is not None  # a connection of our own, never invalidated
        try:
            row = raw.execute(_SQL).fetchone()
        except BaseException:
            self._drop()  # the next read starts on a fresh connection
            raise
        if row is None:
            raise RuntimeError("state_version has no row: the database is not migrated")
        return int(row[0])

    def _drop(self) -> None:
        if self._conn is None:
            return
        sync, conn = self._conn
        self._conn = None
        try:
            conn.close()
        finally:
            sync.dispose()

    async def close(self) -> None:
        """Close the connection on its own thread (sqlite3 connections stay on theirs), then the thread.
        As a disposed engine, a closed reader opens again if asked to read."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(thread, self._drop)
        finally:
            thread.shutdown(wait=False)
