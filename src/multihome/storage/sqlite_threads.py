"""SQLite work on threads of its own: reads on a small pool (sqlite_readers.py), writes on one thread with group commit.

Through the async engine every driver call (BEGIN, execute, fetch, close, COMMIT) is a hop to
aiosqlite's thread and back, ~8 per statement; a Responses turn that reads a chain and stores a
response paid ~25 of them. Here a unit of work is a plain function of a synchronous SQLAlchemy
connection, run whole on a thread: one hop, whatever it executes.

Writes go to one writer thread. What is queued while it commits waits, then goes in the next
transaction together (`BEGIN IMMEDIATE`, the units, one `COMMIT`): under load one fsync covers
many writes (group commit), at low load a write waits for one commit. If a unit raises, that
transaction is rolled back and each of its units runs again in a transaction of its own: the one
that raised gets its exception, the others commit. Every queued write is answered: a connection the
writer cannot make (the file's directory gone, read-only, the disk full, a lock held past the busy timeout)
fails the batch that needed it with `Unavailable` (the APIs' 503) and is tried again for the next, so the
writer recovers once the cause goes away; anything else the thread meets fails its batch, not the thread.

Durability promise: `write` returns only after the transaction holding the unit has committed:
with `synchronous="full"` (the default) fsynced, so it survives a power loss; with "normal" written
to the WAL and visible to every reader, so it survives a crash of the process but not of the
machine (the WAL is fsynced at checkpoints). A unit that fails is not stored.

On the caller's thread (the event loop), where a hop costs more than the work: a hop is two thread
wake-ups, ~0.15 ms of the loop's CPU and as much of the other thread's, and on a loaded machine a
wait for each thread to be scheduled; a short read or an unsynced commit is ~30-40 µs. So
`read_here` runs a short read (the caller bounds it) on a connection of the loop's own, and
`write_raw` commits there when nothing else is being written (`synchronous="normal"` only: an
fsync never runs on the loop). That connection never waits for a lock (busy_timeout 0: `Busy`,
and the caller hops after all) and never checkpoints (the writer does, asked every
`_CHECKPOINT_EVERY` such commits or `_CHECKPOINT_BYTES` of them), and takes only units of at most
`_HERE_MAX_BYTES`, so its work costs the loop a bounded time. Same promise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from . import write_lock
from .engine import IMMEDIATE, SQLITE_BUSY_TIMEOUT_MS, create_sync_sqlite_engine
from .errors import Refused, Unavailable
from .sqlite_readers import SqliteReaders, broken

log = logging.getLogger("multihome.storage")
T = TypeVar("T")
Work = Callable[[Connection], Any]
RawWork = Callable[[sqlite3.Connection], Any]
# (work, whether it takes the sqlite3 connection itself, its future, the loop that awaits it)
_Unit = tuple[Work | RawWork, bool, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_MAX_BATCH = 256  # units per transaction: bounds how long one commit holds the write lock
# Commits on the loop's connection between two checkpoints asked of the writer: a turn writes ~3-4
# pages to the WAL, so ~600-800 pages, under SQLite's own 1,000-page autocheckpoint. Bytes too: a
# few large rows would otherwise grow the WAL by hundreds of MB before the 200th commit.
_CHECKPOINT_EVERY = 200
_CHECKPOINT_BYTES = 4 << 20
# The largest unit committed on the loop: a bigger row (a stored turn can be ~20 MB) would hold the
# loop for tens of ms, so it goes to the writer thread as before.
_HERE_MAX_BYTES = 64 << 10


class Busy(Exception):
    """The work would have to wait for a lock (or the writer is at work): hop to a thread instead."""


class SqliteThreads:
    def __init__(self, engine: AsyncEngine, readers: int = 2, synchronous: str = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self._synchronous = synchronous.upper()
        self._engine: Engine = create_sync_sqlite_engine(engine)
        self._readers = SqliteReaders(engine, readers)
        self._queue: collections.deque[_Unit] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._writing = False  # the writer is committing a batch (read without the lock: a hint only)
        self._here: sqlite3.Connection | None = None  # the loop's own connection (`read_here`, `write_raw`)
        self._here_sa: Connection | None = None  # its SQLAlchemy wrapper, closed by `close`
        self._here_commits = 0  # commits on it since the writer last checkpointed
        self._here_bytes = 0  # and the bytes they wrote, about
        self._checkpoint = False  # the writer's next wake-up checkpoints the WAL
        self._failed = False  # a unit of the batch being committed failed (the writer's own, no lock)
        self._writer = threading.Thread(target=self._run, name="mh-sqlite-write", daemon=True)
        self._writer.start()

    # -- reads ---------------------------------------------------------------------------------------
    async def read(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` on a reader thread (SqliteReaders.read). Each statement sees the database as
        committed when it runs; whatever transaction `work` begins through SQLAlchemy is ended after it."""
        return await self._readers.read(work)

    def idle(self) -> bool:
        """Nothing queued for the writer or being committed by it (a hint, read without the lock): c=1.
        Under load the loop leaves the database to the threads: each sqlite3 call on the loop gives the
        GIL away, and a busy writer takes it, so the loop would wait for it at every call."""
        return not self._writing and not self._queue and not self._closed

    def read_here(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(raw)` on the calling thread, on the sqlite3 connection of the loop's own (autocommit: each
        statement sees what is committed when it runs). Only for a short read the caller has bounded, of
        pages in use (no disk wait). Raises Busy, without waiting, where SQLite would wait for a lock."""
        if self._closed:
            raise Busy()  # closing: the caller's hop is refused as any other work is
        raw = self._here_connection()
        try:
            return work(raw)
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise Busy() from exc
            raise
        finally:
            if raw.in_transaction:
                raw.execute("ROLLBACK")

    def _here_connection(self) -> sqlite3.Connection:
        raw = self._here
        if raw is None:
            conn = self._engine.connect()  # the engine's settings (WAL, foreign keys), then the loop's own:
            raw = cast(sqlite3.Connection, conn.connection.dbapi_connection)
            raw.execute("PRAGMA busy_timeout=0")  # never wait on the loop: Busy, and the caller hops
            raw.execute("PRAGMA wal_autocheckpoint=0")  # a checkpoint syncs the file: the writer's job
            raw.execute(f"PRAGMA synchronous={self._synchronous}")
            self._here_sa, self._here = conn, raw
        return raw

    # -- writes --------------------------------------------------------------------------------------
    async def write(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` in the writer's next transaction; returns once that transaction has committed."""
        return await self._queued(work, False)

    async def write_raw(self, work: Callable[[sqlite3.Connection], T], size: int = _HERE_MAX_BYTES + 1) -> T:
        """`write` for a unit that takes the sqlite3 connection itself (plain SQL, `?` parameters): a
        transaction of such units only is begun and committed on that connection too, without
        SQLAlchemy's execution machinery (~0.1 ms of the writer's CPU per transaction, at c=1 most of
        what a stored response costs there after the commit itself). Same durability. With
        `synchronous="normal"` and the writer idle (nothing to group it with), the unit is committed
        on the loop's connection instead, in a transaction of its own (`write_here`), if `size` (the
        bytes it writes, about) is small; a caller that does not say goes to the writer."""
        if self._synchronous == "NORMAL" and size <= _HERE_MAX_BYTES and self.idle():
            try:
                return self.write_here(work, size)
            except Busy:
                pass  # another connection writes: queue it for the writer, which waits for the lock
        return await self._queued(work, True)

    def write_here(self, work: Callable[[sqlite3.Connection], T], size: int = 0) -> T:
        """`work(raw)` in a transaction of its own on the loop's connection, committed before it returns
        (not fsynced: only with `synchronous="normal"`). Raises Busy, without waiting and with nothing
        written, when another connection holds the write lock."""
        if self._synchronous != "NORMAL":
            raise Busy()  # an fsync would block the loop
        raw = self._here_connection()
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise Busy() from exc
            raise
        try:
            result = work(raw)
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        self._here_commits += 1
        self._here_bytes += size
        if self._here_commits >= _CHECKPOINT_EVERY or self._here_bytes >= _CHECKPOINT_BYTES:
            self._here_commits = self._here_bytes = 0
            with self._wake:
                self._checkpoint = True
                self._wake.notify()
        return result

    async def _queued(self, work: Work | RawWork, raw: bool) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._wake:
            if self._closed:
                raise Unavailable("the SQLite writer is closed")
            self._queue.append((work, raw, future, loop))
            self._wake.notify()
        # A caller that gives up cancels only its wait: the unit is queued or under way and commits all the
        # same (`_settle` skips a future already done), so no `shield` (a future and two callbacks more).
        return await future

    def _run(self) -> None:
        # The thread never ends while the writer is open, whatever a batch meets: a unit's future left
        # unsettled is a caller waiting for ever. A connection that cannot be made (the file's directory gone
        # or read-only, the disk full, a lock held past the busy timeout) fails the batch that needed it, as
        # Unavailable, and is tried again for the next one: the writer recovers once the cause goes away.
        conn: Connection | None = None
        try:
            with contextlib.suppress(Unavailable):  # made now so the first write need not wait for it
                conn = self._connect()
            while True:
                with self._wake:
                    while not self._queue and not self._closed and not self._checkpoint:
                        self._wake.wait()
                    checkpoint, self._checkpoint = self._checkpoint, False
                    if not self._queue and not checkpoint:
                        return
                    batch = [self._queue.popleft() for _ in range(min(len(self._queue), _MAX_BATCH))]
                    self._writing = bool(batch)
                try:
                    if conn is None:
                        conn = self._connect()
                    if checkpoint:  # the loop's commits, which never checkpoint themselves
                        _checkpoint(_driver(conn))
                    if batch:
                        self._commit(conn, batch)
                except BaseException as exc:  # the connection failed, or a bug here: the batch fails, not the thread
                    if not isinstance(exc, Unavailable):
                        log.warning("the SQLite writer failed a batch: %s", type(exc).__name__)
                    _fail(batch, exc)
                    if conn is not None and broken(conn):
                        _drop(conn)
                        conn = None
                    if not isinstance(exc, Exception):
                        raise  # an interrupt: stop (the `finally` fails what is still queued)
                else:
                    if batch and conn is not None and self._failed and broken(conn):
                        _drop(conn)  # a unit failed on a connection that no longer answers: a new one next time
                        conn = None
                finally:
                    self._writing = self._failed = False
        finally:
            with self._wake:  # refuse what comes next, and fail what is queued: nobody waits for ever
                self._closed = True
                left = list(self._queue)
                self._queue.clear()
            _fail(left, Unavailable("the SQLite writer stopped"))
            if conn is not None:
                _drop(conn)

    def _connect(self) -> Connection:
        """The writer's connection (a new one: never invalidated), with its durability; Unavailable if the
        file cannot be opened."""
        try:
            conn = self._engine.connect().execution_options(**{IMMEDIATE: True})
        except Exception as exc:
            log.warning("the SQLite writer cannot open the database: %s", getattr(exc, "orig", exc))
            raise Unavailable(f"the SQLite database cannot be opened for writing ({type(exc).__name__})") from exc
        try:  # this connection's commits only, set outside a transaction
            _driver(conn).execute(f"PRAGMA synchronous={self._synchronous}")
        except Exception as exc:
            _drop(conn)
            raise Unavailable(f"the SQLite database cannot be set up for writing ({type(exc).__name__})") from exc
        return conn

    def _commit(self, conn: Connection, batch: list[_Unit]) -> None:
        done: list[tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, Any, BaseException | None]] = []
        raw = _driver(conn)  # the writer's own
        try:
            if all(is_raw for _, is_raw, _, _ in batch):
                results = _raw_transaction(raw, batch)
            else:
                with conn.begin():
                    results = [work(raw if is_raw else conn) for work, is_raw, _, _ in batch]  # type: ignore[arg-type]
        except Exception as exc:
            if len(batch) > 1:
                # One unit failed (or the commit did): the transaction is rolled back whole, so each unit
                # is tried again alone and only the failing one fails. Cheaper than a SAVEPOINT per unit
                # on the common path; units are pure database work, so running one again is safe.
                for unit in batch:
                    self._commit(conn, [unit])
                return
            if not isinstance(
                exc, IntegrityError | sqlite3.IntegrityError | LookupError | Refused
            ):  # a unit's own refusal is the caller's to report
                log.warning("a state write transaction failed: %s", type(exc).__name__)
                self._failed = True  # not a refusal: the writer checks its connection after the batch
            done = [(batch[0][2], batch[0][3], None, exc)]
        else:
            done = [(future, loop, result, None) for (_, _, future, loop), result in zip(batch, results, strict=True)]
        self._writing = False  # committed: a caller woken now may commit on its own thread (`write_raw`)
        for future, loop, result, error in done:
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is gone (shutdown): nobody is waiting
                pass

    def close(self) -> None:
        """Let queued writes commit, then stop the threads."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._writer.join(timeout=30)
        self._readers.close_now()
        here, self._here, self._here_sa = self._here_sa, None, None
        if here is not None:
            here.close()
        self._engine.dispose()


def _raw_transaction(raw: sqlite3.Connection, batch: list[_Unit]) -> list[Any]:
    """The units in one transaction on the sqlite3 connection (autocommit mode: BEGIN is explicit)."""
    write_lock.begin_immediate(raw, SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        results = [work(raw) for work, _, _, _ in batch]  # type: ignore[arg-type]
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    finally:
        write_lock.ended(raw)
    return results


def _driver(conn: Connection) -> sqlite3.Connection:
    return cast(sqlite3.Connection, conn.connection.dbapi_connection)


def _drop(conn: Connection) -> None:
    """Close a connection that may be broken (closing it may fail too: it is dropped all the same)."""
    with contextlib.suppress(Exception):
        conn.close()


def _fail(units: list[_Unit], error: BaseException) -> None:
    """Fail each unit's future (one already settled is left as it is: `_settle`)."""
    for _, _, future, loop in units:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is waiting
            loop.call_soon_threadsafe(_settle, future, None, error)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLite would have waited for a lock (SQLITE_BUSY / SQLITE_LOCKED: "database is locked")."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(
        exc
    )


def _checkpoint(raw: sqlite3.Connection) -> None:
    """A passive checkpoint (never waits for readers); a failure is logged, the WAL only grows meanwhile."""
    try:
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:
        log.warning("a WAL checkpoint failed: %s", exc)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        try:
            future.set_exception(error)
        except TypeError:  # StopIteration cannot be a future's exception: the caller still hears of it
            future.set_exception(RuntimeError(f"a state write raised {type(error).__name__}"))
    else:
        future.set_result(result)
