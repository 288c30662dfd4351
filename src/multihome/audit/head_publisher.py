"""Upserts this process's newest checkpoints into the head registry, off the hot path.

The writer thread hands over each checkpoint after it is durable in its file (`offer`: a
thread-safe hop onto the loop, nothing else). One task on the loop keeps only the newest checkpoint
per chain and writes them in one statement; the database therefore lags the files by at most one
write, which only narrows what it can prove, never makes an honest trail fail. A database that is
down is retried with backoff and logged, and never holds back an audit write; `close` flushes the
final checkpoint within a deadline, and gives up sooner on a database that has been failing for
`_OUTAGE_S`: the checkpoint files hold what the registry lacks, and the next chain opened in the same
directory links the closed ones (docs/audit.md), so waiting out an outage protects nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..aio import wait_event
from ..outage_log import OutageLog
from .checkpoint import Checkpoint

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("multihome.audit")

CLOSE_DEADLINE_S = 5.0
_RETRY_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_QUIET_S = 10.0  # a registry that is only late (the storage service is still migrating) is not news
_OUTAGE_S = 2.0  # at close, writes failing for this long are an outage, not a blip: stop trying


class HeadPublisher:
    def __init__(self, url: str, trail: str, host: str) -> None:
        self.url, self.trail, self.host = url, trail, host
        self.published = 0  # checkpoints written to the database
        self._latest: dict[str, Checkpoint] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = OutageLog(
            log,
            "audit: cannot write the head registry",
            recovered="audit: the head registry is written again",
            quiet_s=_QUIET_S,
            consequence=". Until it is written, a rollback of the newest checkpoints cannot be detected from the database",
        )

    async def start(self) -> None:
        from ..storage.engine import create_engine  # SQLAlchemy only when there is a registry

        self._loop = loop = asyncio.get_running_loop()
        self._engine = create_engine(self.url)
        self._task = loop.create_task(self._run(), name="audit-head-publisher")

    def offer(self, cp: Checkpoint) -> None:
        """From any thread: publish `cp` soon (a later checkpoint of the same chain replaces it)."""
        assert self._loop is not None, "offer() before start()"  # the audit writer starts this first
        try:
            self._loop.call_soon_threadsafe(self._put, cp)
        except RuntimeError:
            pass  # the loop is gone (process exiting): the files still hold the checkpoint

    def _put(self, cp: Checkpoint) -> None:
        held = self._latest.get(cp.chain)
        if held is None or (held.seq, held.final) <= (cp.seq, cp.final):
            self._latest[cp.chain] = cp
        self._wake.set()

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            if await self._flush():
                attempt = 0
                continue
            await wait_event(self._stop, _RETRY_S[min(attempt, len(_RETRY_S) - 1)])  # a close ends the backoff at once
            attempt += 1
            self._wake.set()

    async def _flush(self) -> bool:
        """Write what is held; True when nothing is left (or nothing was)."""
        if not self._latest:
            return True
        engine = self._engine
        assert engine is not None  # _run and _drain, the only callers, run after start()
        batch, self._latest = self._latest, {}
        from ..storage.engine import write_connection
        from .heads import upsert

        try:
            conn = await write_connection(engine)
            try:
                async with conn.begin():
                    stmt, rows = upsert(engine.dialect.name, self.trail, self.host, list(batch.values()))
                    await conn.execute(stmt, rows)
            finally:
                await conn.close()
        except BaseException as exc:  # any database failure (or a cancel mid-write): keep them, retry
            for cp in batch.values():  # put back unless a newer one arrived meanwhile
                self._put(cp)
            if not isinstance(exc, Exception):
                raise
            self._failing.failed(exc)
            return False
        self.published += len(batch)
        self._failing.ok()
        return not self._latest

    async def close(self) -> None:
        if self._task is None:
            return
        # Let a write in progress finish: cancelling it mid-statement leaves the pool to clean up a
        # connection after the loop is gone (a traceback on the way out of every short CLI run).
        self._stop.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_DEADLINE_S)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        try:
            await asyncio.wait_for(self._drain(), CLOSE_DEADLINE_S)
        except TimeoutError:
            pass
        if self._latest:
            # Nothing is lost: the files hold the checkpoints, and the next chain opened in this directory links
            # these chains (what the registry would have protected until then). A warning, as while running.
            log.warning(
                "audit: the head registry did not take the last checkpoints of %s before shutdown (%s); the "
                "checkpoint files hold them, and the next chain opened in this directory links them",
                ", ".join(sorted(self._latest)),
                self._failing.last_error or "timed out",
            )
        if self._engine is not None:  # set with _task, in start()
            await self._engine.dispose()

    async def _drain(self) -> None:
        # Retried until the store takes it (there is nothing to wait on but time), or it has been failing
        # for _OUTAGE_S (already before the stop, or since).
        while not await self._flush():
            since = self._failing.failing_since
            if since is not None and time.monotonic() - since >= _OUTAGE_S:
                return
            await asyncio.sleep(0.1)
