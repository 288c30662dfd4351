"""Who in this process holds SQLite's write lock: named in the warning when a write waited out the busy timeout.

SQLite's own words are "database is locked", whoever holds the lock. So each write transaction the gateway's connections
begin (BEGIN IMMEDIATE: the async engine's write connections, the state writer thread, the usage writer thread) is
noted with what began it (a task of the event loop, or a thread) and when, and forgotten when it commits or rolls back:
one dict entry per write transaction, nothing per read or per call. The event loop's own commits
(sqlite_threads.py `write_here`) are left out: each begins and ends within one step of the loop, unsynced, so no
write of this process waits for one, and the Responses path pays nothing more. The warning looks
at each entry's sqlite3 connection: one still in its transaction is a holder; one closed in the middle of its
transaction is named too while a cursor of it is left (sqlite3 closes with sqlite3_close_v2, which keeps the
connection, its transaction and the lock until its last statement is finalized, and after the close only a cursor
holds a statement), and forgotten once none is (SQLite has then closed it and rolled its transaction back).
At most one warning per busy timeout: an outage of the database file fails every write, and each caller logs its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
import threading
import time
from typing import Any

log = logging.getLogger("multihome.storage")

# driver connection's id -> (the connection: sqlite3's or aiosqlite's, its sqlite3 connection, the task or thread that
# began, when). Names, not the tasks themselves: a task kept here would keep its frames, and a cancelled one's
# statement with them. The driver is kept so that its id names no other connection while the entry lasts.
_held: dict[int, tuple[Any, sqlite3.Connection, str, float]] = {}
_BUSY_SNAPSHOT = 517  # SQLITE_BUSY_SNAPSHOT
_MOST = 64  # entries kept: past that, those whose connection is no longer in a transaction are dropped
_CLOSED = " (its connection was closed mid-transaction: it keeps the lock while a statement of it is unfinished)"
_said = {"at": -1e9, "unsaid": 0}  # the last warning (monotonic) and the waits given up since, unsaid


def began(driver: Any) -> None:
    """`driver` (a sqlite3 or aiosqlite connection) holds the write lock from now."""
    if len(_held) >= _MOST:
        _prune()
    raw = getattr(driver, "_connection", None) or driver  # aiosqlite's sqlite3 connection (dropped at its close)
    _held[id(driver)] = (driver, raw, _holder(), time.monotonic())


def begin_immediate(raw: sqlite3.Connection, timeout_s: float) -> None:
    """BEGIN IMMEDIATE on a sqlite3 connection of a thread's own, noted; one that gives up after `timeout_s` is
    warned of (`waited_out`)."""
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        waited_out(exc, timeout_s)
        raise
    began(raw)


def ended(driver: Any) -> None:
    """`driver`'s write transaction is over (committed or rolled back)."""
    _held.pop(id(driver), None)


def busy(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is SQLite's "database is locked" after waiting: SQLITE_BUSY or one of
    its extended codes, but not BUSY_SNAPSHOT (a read that cannot become a write, said at once)."""
    seen: BaseException | None = exc
    for _ in range(4):  # SQLAlchemy wraps the driver's error, sometimes twice
        if seen is None:
            return False
        code = getattr(seen, "sqlite_errorcode", None)  # the extended result code
        if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY:
            return code != _BUSY_SNAPSHOT
        seen = seen.__cause__ or seen.__context__
    return False


def waited_out(exc: BaseException, timeout_s: float) -> None:
    """A write gave up on the lock after `timeout_s` (when `exc` says so): warn, naming who holds it."""
    if not busy(exc):
        return
    now = time.monotonic()
    if now - _said["at"] < timeout_s:
        _said["unsaid"] += 1
        return
    others = _said["unsaid"]
    _said["at"], _said["unsaid"] = now, 0
    holders = describe(now)
    log.warning(
        "SQLite: %s waited %g s for the write lock and gave up%s; the lock is held by %s",
        _holder(),
        timeout_s,
        f" ({others} other waits gave up since the last such warning)" if others else "",
        "; ".join(holders)
        if holders
        else "none of this process's connections (another process on the same file, or a commit being synced)",
    )


def describe(now: float | None = None) -> list[str]:
    """Each connection of this process holding the write lock, with what began its transaction and how long ago. A
    connection closed mid-transaction with no cursor left is forgotten here: it holds nothing any more."""
    now = time.monotonic() if now is None else now
    entries = [(key, entry, _state(entry[1])) for key, entry in list(_held.items())]
    closed = [raw for _, (_, raw, _, _), state in entries if state == _CLOSED]
    stepping = (
        {id(c.connection) for c in gc.get_referrers(*closed) if isinstance(c, sqlite3.Cursor)} if closed else set()
    )
    out = []
    for key, (_, raw, holder, since), state in entries:
        if state == _CLOSED and id(raw) not in stepping:
            _held.pop(key, None)  # (a closed connection never begins again: no later entry is under its key)
        elif state is not None:
            out.append(f"{holder} for {now - since:.1f} s{state}")
    return out


def _state(raw: sqlite3.Connection) -> str | None:
    """'' for a connection in its transaction, a remark for a closed one, None for one whose transaction is over."""
    try:
        return "" if raw.in_transaction else None
    except Exception:  # closed (sqlite3.ProgrammingError): closed mid-transaction
        return _CLOSED


def _prune() -> None:
    for key, (_, raw, _, _) in list(_held.items()):
        if _state(raw) != "":
            _held.pop(key, None)


def _holder() -> str:
    """The task of the event loop running this (its name and coroutine's), or else the thread."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        with contextlib.suppress(RuntimeError):
            task = asyncio.current_task(loop)
            if task is not None:
                coro = task.get_coro()
                return f"task {task.get_name()} ({getattr(coro, '__qualname__', type(coro).__name__)})"
    return f"thread {threading.current_thread().name}"
