"""Reads of a SQLite file on threads of their own: one thread hand-off per read, whatever it executes.

Through the async engine every driver call (pool checkout, BEGIN, execute, fetch, the pool's reset) is
a hop to aiosqlite's thread and back: a one-row poll cost ~25 context switches and ~1.1 ms of CPU,
and on a busy event loop each hop also waits for the interpreter. Here a read is a plain function of
a synchronous SQLAlchemy connection, run whole on a reader thread with a connection of that thread's
own (the engine's settings: WAL, busy timeout): one hop there and one back. WAL readers never wait for
writers, so a read sees the last commit of any connection. The connections are in autocommit mode
(engine.py): a read that begins no transaction leaves none open between reads, so WAL checkpoints are
not held back; one that `work` begins through SQLAlchemy is ended after it. A read that fails keeps its
thread's connection (a constraint, a bad statement, an error of `work`: the connection is as good as before,
and a transaction left open is ended); only a connection that no longer answers is closed and replaced.

The threads are made at the first read (an idle part costs nothing). After `close` a read raises
`ReadersClosed` (the caller takes its slower path): a read racing the close either ran before the
connections closed or is refused, and no thread is made again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import create_sync_sqlite_engine
from .errors import Unavailable

T = TypeVar("T")


class ReadersClosed(Unavailable, RuntimeError):
    """The readers are closed: read through the engine instead (a caller that cannot: the APIs' 503)."""


def usable(engine: AsyncEngine) -> bool:
    """A SQLite file: another connection sees the same database (an in-memory one it would not)."""
    url = engine.url
    return (
        engine.dialect.name == "sqlite"
        and url.database not in (None, "", ":memory:")
        and url.query.get("mode") != "memory"
    )


async def read_whole(readers: SqliteReaders | None, engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """`work` on a reader thread (one hop) if there are readers still open, else through the async engine
    (`run_sync`: a hop per driver call)."""
    if readers is not None:
        try:
            return await readers.read(work)
        except ReadersClosed:
            pass  # closed: a disposed engine still serves
    async with engine.connect() as conn:
        return await conn.run_sync(work)


class SqliteReaders:
    def __init__(self, engine: AsyncEngine, threads: int = 1, name: str = "mh-sqlite-read") -> None:
        self._async_engine = engine
        self._threads = threads
        self._name = name
        self._engine: Engine | None = None  # the sync engine, made with the pool
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._opened: list[Connection] = []  # every thread's connection, closed by `close`
        self._lock = threading.Lock()  # orders a read's submission against `close`
        self.closed = False

    async def read(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` on a reader thread. A statement run on the driver's own connection
        (`conn.connection.dbapi_connection`) skips SQLAlchemy's execution machinery (~75 µs for
        BEGIN/COMMIT alone, more than a short query)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.closed:
                raise ReadersClosed("the SQLite readers are closed")
            if self._pool is None:
                self._engine = create_sync_sqlite_engine(self._async_engine)
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix=self._name)
            future = loop.run_in_executor(self._pool, self._read, work)  # submitted under the lock
        return await future

    def _read(self, work: Callable[[Connection], T]) -> T:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self._engine is not None  # made before the first submission
            conn = self._engine.connect()
            with self._lock:
                self._opened.append(conn)
            self._local.conn = conn
        try:
            return work(conn)
        except BaseException:
            # A read's own failure (a bad statement, a constraint, an interrupt, an error of `work`) leaves
            # its connection as good as before: kept. One that no longer answers is replaced at the next read.
            if broken(conn):
                self._local.conn = None
                with self._lock:
                    self._opened.remove(conn)
                with contextlib.suppress(Exception):  # closing a broken connection may fail too: it is dropped
                    conn.close()
            raise
        finally:
            if not conn.closed and conn.in_transaction():
                conn.rollback()

    def close_now(self) -> None:
        """Refuse new reads, wait for those under way, close the connections and the threads (blocks
        for at most one read: for a caller that is not on the event loop, or is closing anyway)."""
        with self._lock:
            self.closed = True
            pool = self._pool
        if pool is None:
            return
        pool.shutdown(wait=True)
        for conn in self._opened:
            conn.close()  # the threads have ended: nothing else uses them
        self._opened.clear()
        assert self._engine is not None
        self._engine.dispose()

    async def close(self) -> None:
        """`close_now` off the event loop (it waits for reads under way)."""
        with self._lock:
            self.closed = True
            if self._pool is None:
                return
        await asyncio.get_running_loop().run_in_executor(None, self.close_now)


def broken(conn: Connection) -> bool:
    """Whether a connection a read failed on can serve no other: closed, invalidated, or its driver's
    connection no longer reads the file (closed underneath, an I/O error). Only after a failure: ends a
    transaction the read left open (SQLAlchemy's or one begun on the driver's connection: kept, it would
    hold an old snapshot for every later read), then reads the file's header page."""
    if conn.closed or conn.invalidated:
        return True
    try:
        if conn.in_transaction():
            conn.rollback()
        raw = conn.connection.dbapi_connection
        if raw is None:
            return True
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raw.execute("PRAGMA schema_version").fetchone()
    except Exception:
        return True
    return False
