"""The batched usage writer: rows queue in memory and are committed in groups.

Promise (docs/metering.md): a row accepted by `put` is written unless the process dies first.
It is committed within `flush_interval_ms` plus one transaction when the database keeps up;
a failed batch is retried with backoff (never dropped), the insert ignores rows already stored
(so a retry after an ambiguous commit cannot count a call twice), and `close()` drains the
queue for as long as the database takes rows. The queue is bounded by admission: past
`max_backlog` rows, or past `max_backlog_s` seconds of writing at the rate the database has been
taking them, the limiter refuses new calls, so the rows of calls already admitted always fit and
can be written within about that long after a stop. A row of a call that reached no upstream and
costs nothing (refused, denied, a bad request) is not queued (`skip`) while the backlog is
full: refusals must not feed the queue they are meant to cap.

With a spool (spool.py) every row `put` takes is also copied to a local file first, and let go
there once committed: a process killed before the commit loses no row (the next start replays it).
A spool that cannot make its next file (a full disk) refuses new calls the same way as a full
backlog, while the room left in its current file takes the rows of the calls already admitted.
`close()` that gives up keeps the unwritten rows in the spool instead of losing them; so when the spool
holds every unwritten row, a stop waits only `_SPOOLED_STALL_S` for a database that fails every batch
(the next start writes the rows), not `_STALL_S`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..aio import wait_event
from ..outage_log import OutageLog
from ..storage import write_lock
from ..storage.engine import SQLITE_BUSY_TIMEOUT_MS, create_sync_sqlite_engine
from .row import COLUMNS, Row
from .spool import UsageSpool

log = logging.getLogger("multihome.metering.writer")

# sqlite3 binds an int, float or str as it is, but looks every other value up in its adapter registry:
# for None (a usage row's empty team, deployment or provider) the miss ends in a lookup on its protocol
# type that formats and clears an AttributeError (~3,300 instructions per value, with the GIL held, on
# the writer thread). An adapter found at once is a dict hit and a C call; it gives None back, which is
# bound as NULL as before. Process-wide, and the same NULL for every sqlite3 connection.
sqlite3.register_adapter(type(None), cast(Callable[[None], None], {}.get))

_PER_STATEMENT = 250  # rows per INSERT on SQLite: 250 x 23 columns stays under its 32,766 parameters
_STEP = 16  # ... and a batch's rest goes in statements of a multiple of this many rows and of fewer
_GROWTH = 10  # on SQLite a backlog is written in batches of up to this many times batch_size
_STALL_S = 30.0  # close() gives up when no batch could be written for this long (database away)
# ... or this long when the spool holds every unwritten row: waiting longer loses nothing less, and a stop that
# takes 30 s outlives the usual grace before SIGKILL (Kubernetes': 30 s).
_SPOOLED_STALL_S = 2.0
_HOLD_S = 1.0  # PostgreSQL: the writer's connection goes back to the pool after this long without rows


class UsageWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        table: sa.Table,
        *,
        batch_size: int = 500,
        flush_interval_ms: int = 50,
        max_backlog: int = 50_000,
        max_backlog_s: float = 10.0,
        spool: UsageSpool | None = None,
    ) -> None:
        self.engine = engine
        self.spool = spool
        self.table = table
        self.batch_size = batch_size
        self.interval = flush_interval_ms / 1000
        self.max_backlog = max_backlog
        self.max_backlog_s = max_backlog_s
        self.rows: deque[Row] = deque()  # row.py: tuples in the table's column order, stamps as text
        self.written = 0
        self.failures = 0
        self.last_error = ""  # the last failed batch's error, first line (for close's report)
        self._unwritten = OutageLog(
            log, "usage rows not written (they wait in memory)", recovered="usage rows written again"
        )
        self.failing = False  # the last batch failed: rows wait for the database (a flush would wait for it too)
        self.skipped = 0  # rows of free calls not queued because the backlog was full
        self.rate = 0.0  # rows per second of writing, from recent batches (0: not measured yet)
        self._limit = max_backlog  # the backlog that refuses calls: max_backlog, or less if the database is slow
        self._wake = asyncio.Event()
        self._committed = asyncio.Condition()
        self._accepted = 0  # rows ever accepted; `written` catches up with it
        self._flush_to = 0  # a flush() waits for `written` to reach this: write without gathering until then
        self._task: asyncio.Task | None = None
        self._closing = False
        self._closed = asyncio.Event()  # set by close(): a retry waiting out its backoff goes at once
        self._skip_logged = 0.0
        self.on_flush: Callable[[float], None] | None = None  # seconds per committed batch (metrics)
        self._columns = [c.name for c in table.columns]
        assert tuple(self._columns) == COLUMNS, "rows are row.py's tuples"
        self._pg = _pg_insert(table) if engine.dialect.name == "postgresql" else None
        # PostgreSQL: each queued row's JSON (`_pg_insert`'s parameter is a batch of them), in step with
        # `rows`. Made by `put`, while the row's values are still in the CPU's cache: encoded at batch time
        # a row's ~25 objects were fetched from memory again, ~1.5 us a row of the batch's slice of the loop.
        self._encoded: deque[bytes] | None = deque() if self._pg is not None else None
        # SQLite, behind: bigger batches, so the fixed cost of a transaction (hand-offs that each wait a
        # loop cycle) is shared by more rows. PostgreSQL's batch is joined and sent from the event loop:
        # its batches stay at batch_size.
        self._max_batch = batch_size * (_GROWTH if self._pg is None else 1)
        self._sqlite_head = f"INSERT OR IGNORE INTO {table.name} ({', '.join(self._columns)}) VALUES "
        self._sqlite_row = "(" + ", ".join("?" * len(self._columns)) + ")"
        self._sqlite_sqls: dict[int, str] = {}
        # SQLite: a thread of the writer's own with its own sqlite3 connection, on which a whole batch
        # (BEGIN IMMEDIATE, the INSERTs, COMMIT) runs as one unit: one hand-off there and one back.
        self._thread: ThreadPoolExecutor | None = None
        self._conn: tuple[AsyncEngine, Any, Any] | None = None  # (made for, sync engine, its connection)
        # PostgreSQL: a pooled connection held from batch to batch while rows keep coming, (made for, the
        # SQLAlchemy connection, its asyncpg connection). A checkout per batch (the pool's pre-ping is
        # three round trips, each step of it through a greenlet) cost the loop more than the INSERT.
        self._held: tuple[AsyncEngine, AsyncConnection, Any] | None = None

    def put(self, row: Row) -> int:
        """Never blocks, never refuses: admission keeps the backlog bounded (see `overloaded`). With a
        spool the row is in a local file (in the kernel) when this returns. -> the row's position in
        the spool (`UsageSpool.rows_in`), 0 without one."""
        spool = self.spool
        at = spool.append(row) if spool is not None else 0  # first: a row it counts is a row queued
        encoded = self._encoded
        if encoded is not None:
            encoded.append(_ROW_JSON(row))
        rows = self.rows
        rows.append(row)
        self._accepted += 1
        n = len(rows)
        if n == 1 or n == self.batch_size:  # only transitions wake the writer
            self._wake.set()
        return at

    def put_replayed(self, rows: list[Row]) -> None:
        """Rows read back from a stopped process's spool file (replay.py): queued, not spooled again."""
        if self.spool is not None:
            self.spool.unspooled(len(rows))
        if self._encoded is not None:
            self._encoded.extend(map(_ROW_JSON, rows))
        self.rows.extend(rows)
        self._accepted += len(rows)
        self._wake.set()

    def skip(self) -> None:
        """Count the row not queued for a call that reached no upstream and costs nothing, while the
        backlog is full (the caller checks `overloaded`); logged at most every 10 s."""
        self.skipped += 1
        now = time.monotonic()
        if now - self._skip_logged >= 10:
            self._skip_logged = now
            log.warning(
                "usage backlog full (%d rows) or usage spool out of room: %d calls that reached no upstream and "
                "cost nothing got no usage row",
                len(self.rows),
                self.skipped,
            )

    def overloaded(self) -> bool:
        """New calls must be refused: the backlog is full, or the spool has no room for their rows."""
        spool = self.spool
        return len(self.rows) >= self._limit or (spool is not None and spool.down is not None and spool.refusing())

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout: float = 30) -> None:
        """Wait until every row accepted so far is committed (tests; before reading summaries)."""
        target = self._accepted
        self._flush_to = max(self._flush_to, target)  # no gathering wait until these are written
        self._wake.set()
        async with self._committed:
            await asyncio.wait_for(self._committed.wait_for(lambda: self.written >= target), timeout)

    async def close(self, stall_timeout: float | None = None) -> None:
        """Write every accepted row. Waits as long as batches keep committing, or a batch is still
        waiting for a slow database (admission bounds the work to about max_backlog_s); gives up
        when batches have been failing with none written for `stall_timeout` (the database is away),
        or when nothing was written for ten times that. By default `stall_timeout` is `_SPOOLED_STALL_S`
        when the spool holds every unwritten row (they are written at the next start), else `_STALL_S`."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        task = self._task
        if task is None:
            if self.spool is not None:
                await self.spool.close()
            return
        spooled = self.spool is not None and self.spool.errors == 0  # (replayed rows: still in their files)
        if stall_timeout is None:
            stall_timeout = _SPOOLED_STALL_S if spooled else _STALL_S
        gave_up = await self._drain(task, stall_timeout)
        if gave_up is None:
            await self._stop_thread()
        elif self._thread is not None:  # gave up: a batch may still hold the thread; do not wait for it
            self._thread.shutdown(wait=False)
            self._thread = None
        if self.spool is None:
            if gave_up is not None:
                log.error(
                    "usage writer closed with %d rows unwritten: %s; without a usage spool they are lost",
                    len(self.rows),
                    gave_up,
                )
            return
        kept = await self.spool.close(quiet=gave_up is not None)  # keeps the rows not written, for the next start
        if gave_up is not None:
            # One line: how many, why, and where they wait. Rows the spool could not take are only in memory,
            # lost with the process: then an error, as without a spool.
            lost = min(self.spool.errors, len(self.rows))
            (log.error if lost else log.warning)(
                "usage writer closed with %d rows unwritten: %s; %d rows kept in the usage spool %s, the next "
                "start writes them%s",
                len(self.rows),
                gave_up,
                kept,
                self.spool.dir,
                f"; up to {lost} rows the spool could not take are lost" if lost else "",
            )

    async def _drain(self, task: asyncio.Task, stall_timeout: float) -> str | None:
        """Wait for the writer task to write every row; if it had to be given up, why (None: all written)."""
        t0, written = time.monotonic(), self.written
        seen = (self.written, self.failures, t0)  # progress, failures, when progress was last seen
        while not task.done():
            await asyncio.wait({task}, timeout=min(1.0, stall_timeout))
            now = time.monotonic()
            if self.written != seen[0]:
                seen = (self.written, self.failures, now)
                continue
            idle = now - seen[2]
            if (self.failures != seen[1] and idle >= stall_timeout) or idle >= 10 * stall_timeout:
                task.cancel()
                # Awaited, so its connection is let go on this loop (not left to the garbage collector), but
                # bounded: closing a connection to a host that stopped answering can itself hang.
                await asyncio.wait({task}, timeout=5)
                failed = self.failures - seen[1]
                last = f", the last: {self.last_error}" if failed and self.last_error else ""
                return (
                    f"no batch could be written for {idle:.0f} s ({failed} failed attempts{last}; the database "
                    "is unreachable or refuses the rows)"
                )
        if self.written - written > self.batch_size:
            log.info(
                "usage writer wrote %d queued rows in %.1f s at close", self.written - written, time.monotonic() - t0
            )
        return None

    async def _write(self, batch: list[Row]) -> None:
        if self._pg is not None:
            assert self._encoded is not None  # made with _pg
            driver = await self._pg_driver()
            try:
                # One statement (atomic): the batch's rows are the first len(batch) queued, as their JSON.
                await driver.execute(self._pg, _pg_batch(islice(self._encoded, len(batch))))
            except BaseException:
                await self._let_go(broken=True)  # the next attempt starts on a connection checked by the pool
                raise
            return
        # The whole batch on the writer's own thread: one hand-off there and one back, whatever the
        # batch size, and the rows are converted there. Through aiosqlite every driver call (checkout,
        # BEGIN, each executemany, COMMIT, the pool's reset) was a round trip, and on a busy event loop
        # each one waits for the interpreter: through SQLAlchemy's 50-row chunks the writer fell to
        # ~350 rows/s under load (bench/usage_writer_bench.py).
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="mh-usage-write")
        await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite_batch, self.engine, batch)

    async def _pg_driver(self) -> Any:
        """The asyncpg connection of the held connection, checked out of the pool (pre-pinged) if none is
        held, the held one is closed (the server went away) or was made for a replaced engine."""
        held = self._held
        if held is not None and (held[0] is not self.engine or held[2].is_closed()):
            await self._let_go(broken=held[2].is_closed())
            held = None
        if held is None:
            engine = self.engine
            conn = await engine.connect()
            try:
                driver = (await conn.get_raw_connection()).driver_connection
            except BaseException:
                await conn.close()
                raise
            assert driver is not None  # None only for a connection already invalidated
            held = self._held = (engine, conn, driver)
        return held[2]

    async def _let_go(self, *, broken: bool = False) -> None:
        """Give the held PostgreSQL connection back to the pool; `broken`: close it instead (a batch failed
        on it: it may be in a failed transaction or dead)."""
        held, self._held = self._held, None
        if held is None:
            return
        conn = held[1]
        try:
            if broken:
                await conn.invalidate()
            await conn.close()
        except Exception as exc:  # a dead connection's close: nothing of ours is lost with it
            log.debug("usage writer: closing its connection failed (%s)", exc)

    def _sqlite_batch(self, engine: AsyncEngine, batch: list[Row]) -> None:
        """One transaction on the writer thread: BEGIN IMMEDIATE, INSERTs of up to 250 rows, COMMIT."""
        raw = self._sqlite_connection(engine)
        write_lock.begin_immediate(raw, SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            n = len(batch)
            full = n - n % _PER_STATEMENT
            if full:
                raw.executemany(self._sqlite_sql(_PER_STATEMENT), self._statements(batch, 0, full))
            # The rest exactly, in at most two statements: a multiple of _STEP rows, then fewer than _STEP. So
            # sqlite3's per-connection cache holds ~30 distinct statements, not one per size (up to 249 of
            # thousands of parameters each, tens of MB), and no row is bound twice: padded to a power of two
            # with copies of its last row, a 135-row batch (a gateway at ~2,700 calls/s) bound and looked up
            # 250: ~40 % more of the writer thread's CPU per row (bench/RESULTS.md).
            cut = n - (n - full) % _STEP
            for start, stop in ((full, cut), (cut, n)):
                if stop > start:
                    raw.execute(self._sqlite_sql(stop - start), tuple(chain.from_iterable(batch[start:stop])))
            raw.execute("COMMIT")
        except BaseException:
            self._drop_connection()  # rolls back; the next batch starts on a fresh connection
            raise
        finally:
            write_lock.ended(raw)

    def _sqlite_connection(self, engine: AsyncEngine):
        """The writer thread's sqlite3 connection to `engine`'s file, opened with the same settings
        (WAL, busy timeout, synchronous=FULL: a committed batch survives a power loss)."""
        if self._conn is not None and self._conn[0] is not engine:
            self._drop_connection()  # the engine was replaced (tests swap in an unreachable one)
        if self._conn is None:
            sync = create_sync_sqlite_engine(engine)
            try:
                conn = sync.connect()
            except BaseException:
                sync.dispose()
                raise
            self._conn = (engine, sync, conn)
        raw = self._conn[2].connection.dbapi_connection
        assert raw is not None  # a connection of our own, never invalidated
        return raw

    def _drop_connection(self) -> None:
        if self._conn is None:
            return
        _, sync, conn = self._conn
        self._conn = None
        try:
            conn.close()  # rolls back what is open
        finally:
            sync.dispose()

    async def _stop_thread(self) -> None:
        """Close the writer thread's connection on that thread (sqlite3 connections stay on theirs)."""
        if self._thread is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._thread, self._drop_connection)
        self._thread.shutdown(wait=False)
        self._thread = None

    def _sqlite_sql(self, rows: int) -> str:
        """One INSERT of `rows` rows. INSERT OR IGNORE: a retry after an ambiguous commit cannot count a
        call twice. Many rows per statement, because sqlite3 lets go of the GIL around every step and a
        busy event loop can keep it for a switch interval (5 ms) before the writer thread gets it back:
        one step per row made a 500-row batch wait for the GIL hundreds of times."""
        sql = self._sqlite_sqls.get(rows)
        if sql is None:
            sql = self._sqlite_sqls[rows] = self._sqlite_head + ", ".join([self._sqlite_row] * rows)
        return sql

    @staticmethod
    def _statements(batch: list[Row], start: int, stop: int) -> Iterator[tuple]:
        """The flat parameters of each full INSERT over batch[start:stop]: the rows as they are (row.py: the
        stamps already the text SQLAlchemy's SQLite DateTime writes and reads back, the flags 0/1),
        chained in C."""
        for i in range(start, stop, _PER_STATEMENT):
            yield tuple(chain.from_iterable(batch[i : i + _PER_STATEMENT]))

    def _measured(self, rows: int, seconds: float) -> None:
        """Learn the database's rate from a batch big enough to tell, and cap the backlog at what it
        writes in max_backlog_s (never below one batch, so a slow moment cannot refuse everything)."""
        if rows < self.batch_size or seconds <= 0:
            return
        rate = rows / seconds
        self.rate = rate if self.rate == 0 else 0.7 * self.rate + 0.3 * rate
        self._limit = min(self.max_backlog, max(self.batch_size, int(self.rate * self.max_backlog_s)))

    async def _run(self) -> None:
        try:
            await self._batches()
        finally:
            await self._let_go()

    async def _batches(self) -> None:
        backoff = 0.1
        while True:
            if not self.rows:
                if self._closing:
                    return
                self._wake.clear()
                if not self.rows and not self._closing:
                    if self._held is None:
                        await self._wake.wait()
                    elif not await _wait(self._wake, _HOLD_S):
                        await self._let_go()  # idle: back to the pool (which pings it before its next use)
                continue
            if len(self.rows) < self.batch_size and not self._closing and self.written >= self._flush_to:
                # Gather a group (one commit for many calls) for up to the flush interval; a full
                # batch, flush() or close() ends the wait early.
                self._wake.clear()
                await _wait(self._wake, self.interval)
            batch = list(islice(self.rows, self._max_batch))
            t0 = time.perf_counter()
            try:
                await self._write(batch)
            except Exception as exc:
                self.failures += 1
                self.failing = True
                self._unwritten.failed(exc)
                self.last_error = self._unwritten.last_error
                if self._closing:  # a stop's tries are not spaced out by the backoff of an outage before it
                    await asyncio.sleep(min(backoff, 0.5))
                else:
                    await wait_event(self._closed, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            took = time.perf_counter() - t0
            self._measured(len(batch), took)
            backoff = 0.1
            self.failing = False
            self._unwritten.ok()
            if self.on_flush is not None:
                self.on_flush(took)
            rows, encoded = self.rows, self._encoded
            for _ in batch:
                rows.popleft()
            if encoded is not None:
                for _ in batch:
                    encoded.popleft()
            if self.spool is not None:
                self.spool.committed(len(batch))
            self.written += len(batch)
            async with self._committed:
                self._committed.notify_all()


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Whether `event` was set within `timeout` seconds, as aio.wait_event, without its exception: on time
    the timer sets the event itself (the writer clears it before each wait). asyncio.timeout ends a wait
    by cancelling the task and catching the CancelledError, ~50 us of the loop at each batch's gathering
    wait. A cancellation propagates (no wait_for here to swallow it). Timed out = the timer rang (not a
    clock comparison: uvloop's clock and timers are whole milliseconds)."""
    rang = False

    def ring() -> None:
        nonlocal rang
        rang = True
        event.set()

    timer = asyncio.get_running_loop().call_later(timeout, ring)
    try:
        await event.wait()
    finally:
        timer.cancel()
    return not rang


def _pg_insert(table: sa.Table) -> str:
    """PostgreSQL's INSERT of a whole batch from one parameter: row.py's tuples as one JSON array of arrays
    (`_pg_batch`), taken apart by the server. asyncpg's executemany encoded each parameter of each row in
    its own call, ~3.5 us a row on the event loop in one stretch (a 75-row batch held the loop ~0.3 ms: a
    request arriving then waited that long), and sent each row as its own Bind and Execute; msgspec encodes
    each row as `put` queues it, the batch joins them, and the server runs one statement (jsonb: parsed
    once, where json would be parsed again for every column). The stamps' text (naive UTC) and the flags
    (0/1) are cast by the server; ON CONFLICT DO NOTHING, as INSERT OR IGNORE on SQLite."""

    def value(i: int, c: sa.Column) -> str:
        field = f"r->>{i}"  # the element as text (NULL for a JSON null); one jsonb parse for the batch
        if isinstance(c.type, sa.DateTime):
            return f"({field})::timestamp AT TIME ZONE 'UTC'"
        if isinstance(c.type, sa.Boolean):
            return f"({field})::int4::boolean"
        if isinstance(c.type, sa.BigInteger):
            return f"({field})::int8"
        if isinstance(c.type, sa.Integer):
            return f"({field})::int4"
        if isinstance(c.type, sa.Float):
            return f"({field})::float8"
        assert isinstance(c.type, sa.String), f"usage column {c.name}: no cast from JSON text for {c.type}"
        return field

    values = ", ".join(value(i, c) for i, c in enumerate(table.columns))
    names = ", ".join(c.name for c in table.columns)
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {values} FROM jsonb_array_elements($1::jsonb) AS r "
        "ON CONFLICT DO NOTHING"
    )


_ROW_JSON = msgspec.json.Encoder().encode  # a row as a JSON array in column order, as the spool writes it


def _pg_batch(rows: Iterable[bytes]) -> str:
    """A batch as `_pg_insert`'s one parameter: a JSON array of the rows' JSON arrays (whatever the spool
    took encodes here). A latency is a finite float (a JSON null would be refused by the column, never
    stored wrong)."""
    return "[" + b",".join(rows).decode() + "]"


__all__ = ["UsageWriter"]
