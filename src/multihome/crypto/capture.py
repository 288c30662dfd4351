"""Content capture, stored sealed (docs/encryption.md "Content capture").

`CaptureWriter` takes the finished calls of tenants with capture on (`capture.tenants`) from the
accounting tracker without blocking (a deque append), and a background task seals each one under
the tenant's `capture` data key and writes a batch per transaction (`captures`), like the usage
writer: nothing on the hot path waits for the KMS or the database. A batch that cannot be sealed
(KMS down) or written stays queued and is tried again; beyond `max_queue` the oldest captures are
dropped and logged, so an outage cannot grow memory without bound. At shutdown what is queued is
written before the keyring closes.

`CaptureReader` opens them for the admin API (auditors only, api/admin/captures.py); a capture of
a shredded tenant no longer opens and is listed as unreadable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..accounting.capture import Captured
from ..accounting.record import CallRecord
from ..aio import wait_event
from ..config.capture import CaptureConfig
from ..storage import rows as stored
from ..storage.engine import write_connection
from ..storage.row_reads import Listed
from ..storage.tables import captures as t
from .envelope import stored_bytes
from .errors import CryptoError, DataKeyNotFound, KmsError, KmsUnavailable
from .keyring import Keyring

PURPOSE = "capture"
TABLE = "captures"
_RETRY_S = 2.0

log = logging.getLogger("multihome.crypto")


class CaptureContent(msgspec.Struct):
    """What is sealed: the request body and the answer as sent (a JSON body, or the SSE stream)."""

    prompt: str
    answer: str
    truncated: bool = False


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class CaptureWriter:
    """The accounting's `CaptureSink`: finished calls in, sealed rows out, in batches."""

    def __init__(self, config: CaptureConfig) -> None:
        self.tenants = frozenset(config.tenants)
        self.max_bytes = config.max_bytes
        self._batch = config.batch_size
        self._interval = config.flush_interval_s
        self._max_queue = config.max_queue
        self._queue: collections.deque[tuple[Captured, CallRecord]] = collections.deque()
        self._wake = asyncio.Event()
        self._keyring: Keyring | None = None
        self._engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0
        self.on_flush: Callable[[float], None] | None = None  # seconds per sealed and written batch (metrics)

    @property
    def depth(self) -> int:
        """Captures waiting to be sealed and written."""
        return len(self._queue)

    def record(self, captured: Captured, call: CallRecord) -> None:
        self._queue.append((captured, call))
        while len(self._queue) > self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("content capture: %d captures dropped (queue full: KMS or database down)", self.dropped)
        if len(self._queue) >= self._batch:
            self._wake.set()

    def start(self, keyring: Keyring, engine: AsyncEngine) -> None:
        self._keyring, self._engine = keyring, engine
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await wait_event(self._wake, self._interval)
            self._wake.clear()
            while self._queue:
                if not await self._flush():
                    await asyncio.sleep(_RETRY_S)
                    break

    async def _flush(self) -> bool:
        """Seal and write the oldest batch; False (the batch stays queued) if the KMS or database failed."""
        assert self._keyring is not None and self._engine is not None
        batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
        started = time.perf_counter()
        rows: list[dict[str, Any]] = []
        try:
            for captured, call in batch:
                content = CaptureContent(_text(captured.prompt), _text(captured.answer), captured.truncated)
                sealed = await self._keyring.seal(
                    call.tenant, PURPOSE, TABLE, call.request_id, msgspec.json.encode(content)
                )
                rows.append(
                    {
                        "id": call.request_id,
                        "tenant_id": call.tenant,
                        "at": datetime.fromtimestamp(call.finished_at, UTC),
                        "endpoint": call.endpoint[:40],
                        "model_group": call.model_group[:200],
                        "deployment": call.deployment,
                        "status": call.status,
                        "sealed": sealed,
                    }
                )
            conn = await write_connection(self._engine)
            try:
                async with conn.begin():
                    ids = [r["id"] for r in rows]
                    # Written before (a retry after a lost commit answer): skip those, write the rest.
                    there = set((await conn.execute(sa.select(t.c.id).where(t.c.id.in_(ids)))).scalars())
                    fresh = [r for r in rows if r["id"] not in there]
                    if fresh:
                        await conn.execute(sa.insert(t), fresh)
            finally:
                await conn.close()
        except KmsError as exc:
            log.error("content capture: cannot seal (%s); %d captures wait", exc, len(self._queue))
            return False
        except Exception:
            log.exception("content capture: cannot write; %d captures wait", len(self._queue))
            return False
        for _ in batch:
            self._queue.popleft()
        self.written += len(batch)
        if self.on_flush is not None:
            self.on_flush(time.perf_counter() - started)
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the background task and write what is queued (bounded: the KMS may be down)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._queue and loop.time() < deadline:
            if not await self._flush():
                break
        if self._queue:
            log.error("content capture: %d captures not written at shutdown", len(self._queue))


class CaptureView(msgspec.Struct, omit_defaults=True):
    id: str
    tenant_id: str
    at: datetime
    endpoint: str
    model_group: str
    deployment: str | None
    status: int
    object: str = "capture"
    prompt: str | None = None
    answer: str | None = None
    truncated: bool = False
    unreadable: str | None = None  # why the content does not open (the tenant was shredded)


class CaptureReader:
    def __init__(self, keyring: Keyring, engine: AsyncEngine) -> None:
        self.keyring = keyring
        self.engine = engine

    async def page(self, tenant: str, limit: int, after: str | None = None) -> Listed[CaptureView]:
        """A tenant's captures, oldest first, after the capture `after` (its id), opened. A row whose clear
        columns cannot be read (SQLite keeps any value in any column: a time that is not a time) is named
        in `unreadable` instead, never a failed page (docs/storage.md)."""
        q = sa.select(t).where(t.c.tenant_id == tenant)
        async with self.engine.connect() as conn:
            if after:
                # Compared in SQL: the mark is not decoded here, so an unreadable row's id is a cursor too.
                found = await conn.scalar(sa.select(t.c.id).where(t.c.id == after, t.c.tenant_id == tenant))
                if found is not None:
                    mark = sa.select(t.c.at).where(t.c.id == after).scalar_subquery()
                    q = q.where(sa.or_(t.c.at > mark, sa.and_(t.c.at == mark, t.c.id > after)))
            found_rows, bad = await stored.fetch(conn, q.order_by(t.c.at, t.c.id).limit(limit), t)
        out: Listed[CaptureView] = Listed()
        out.unreadable = tuple(bad)
        for r in found_rows:
            at = r.at if r.at.tzinfo is not None else r.at.replace(tzinfo=UTC)
            view = CaptureView(r.id, r.tenant_id, at, r.endpoint, r.model_group, r.deployment, r.status)
            # Not bytes (SQLite keeps text in a blob column): opens as no envelope, so it is listed as
            # not opening (MalformedCiphertext) rather than failing the page with a TypeError.
            try:
                plain = await self.keyring.open(tenant, PURPOSE, TABLE, r.id, stored_bytes(r.sealed))
            except DataKeyNotFound:
                view.unreadable = "shredded: its data key is destroyed"
            except KmsUnavailable:
                raise  # the KMS is down for now: the whole answer is a 503, not a page of holes
            except CryptoError as exc:  # a destroyed KEK, a tampered row: this one for good
                view.unreadable = f"does not open: {exc}"
            else:
                content = msgspec.json.decode(plain, type=CaptureContent)
                view.prompt, view.answer, view.truncated = content.prompt, content.answer, content.truncated
            out.append(view)
        return out
