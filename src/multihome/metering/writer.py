"""The batched usage writer: rows queue in memory and are committed in groups.

Promise (docs/metering.md): a row accepted by `put` is written unless the process dies first.
It is committed within `flush_interval_ms` plus one transaction when the database keeps up;
a failed batch is retried with backoff (never dropped), the insert ignores rows already stored
(so a retry after an ambiguous commit cannot count a call twice), and `close()` drains the
queue. The queue is bounded by admission: past `max_backlog` the limiter refuses new calls,
so the rows of calls already admitted always fit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ..storage.engine import PgBulkInsert

log = logging.getLogger("multihome.metering.writer")
_CHUNK = 50  # rows per statement within a batch's transaction


class UsageWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        table: sa.Table,
        *,
        batch_size: int = 500,
        flush_interval_ms: int = 50,
        max_backlog: int = 50_000,
    ) -> None:
        self.engine = engine
        self.table = table
        self.batch_size = batch_size
        self.interval = flush_interval_ms / 1000
        self.max_backlog = max_backlog
        self.rows: deque[dict] = deque()
        self.written = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._committed = asyncio.Condition()
        self._accepted = 0  # rows ever accepted; `written` catches up with it
        self._task: asyncio.Task | None = None
        self._closing = False
        self.on_flush: Callable[[float], None] | None = None  # seconds per committed batch (metrics)
        postgres = engine.dialect.name == "postgresql"
        self._insert = sqlite_insert(table).on_conflict_do_nothing()  # SQLite; PostgreSQL uses self._pg
        self._pg = PgBulkInsert(table, on_conflict_do_nothing=True) if postgres else None

    def put(self, row: dict) -> None:
        """Never blocks, never refuses: admission keeps the backlog bounded (see `overloaded`)."""
        rows = self.rows
        rows.append(row)
        self._accepted += 1
        if len(rows) == 1 or len(rows) == self.batch_size:  # only transitions wake the writer
            self._wake.set()

    def overloaded(self) -> bool:
        return len(self.rows) >= self.max_backlog

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout: float = 30) -> None:
        """Wait until every row accepted so far is committed (tests; before reading summaries)."""
        target = self._accepted
        self._wake.set()
        async with self._committed:
            await asyncio.wait_for(self._committed.wait_for(lambda: self.written >= target), timeout)

    async def close(self, timeout: float = 30) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.error("usage writer closed with %d rows unwritten (database unreachable)", len(self.rows))

    async def _write(self, batch: list[dict]) -> None:
        if self._pg is not None:
            async with self.engine.connect() as conn:
                await self._pg.run(conn, batch)
            return
        async with self.engine.begin() as conn:
            # Chunks keep each synchronous stretch (parameter processing) short, so a big batch
            # never stalls the event loop for milliseconds.
            for i in range(0, len(batch), _CHUNK):
                await conn.execute(self._insert, batch[i : i + _CHUNK])

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self.rows:
                if self._closing:
                    return
                self._wake.clear()
                if not self.rows and not self._closing:
                    await self._wake.wait()
                continue
            if len(self.rows) < self.batch_size and not self._closing:
                # Gather a group (one commit for many calls) for up to the flush interval; a full
                # batch, flush() or close() ends the wait early.
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                except TimeoutError:
                    pass
            batch = [self.rows[i] for i in range(min(self.batch_size, len(self.rows)))]
            started = time.perf_counter()
            try:
                await self._write(batch)
            except Exception as exc:
                self.failures += 1
                log.warning("usage batch of %d rows not written (%s); retrying in %.1fs", len(batch), exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if self.on_flush is not None:
                self.on_flush(time.perf_counter() - started)
            for _ in batch:
                self.rows.popleft()
            self.written += len(batch)
            async with self._committed:
                self._committed.notify_all()
