"""Background responses in the store: the queued response and its job in one transaction, its stream
events persisted in batches, and the one write that makes it final (docs/responses.md "Background mode").

The `responses` row is the arbiter of a background response's fate. Every write of a run (a batch
of events, the final response) first locks that row and checks it is still open (`queued` or
`in_progress`); a cancel or a delete that got there first wins, and the run learns it from the
write's answer and stops. So a response becomes final exactly once, and nothing is appended to a
cancelled or deleted one.

Events are the stream's truth: a live client and a resuming client are both sent only events
already committed here, in `sequence_number` order, so what a client saw before a crash is exactly
what a resume continues from (no sequence number is sent twice with different content, none is
skipped). A run that replaces a crashed one continues numbering after the last committed event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..crypto.envelope import stored_bytes
from ..storage.tables import jobs, response_events, responses
from .idempotency import held, mark_async
from .jobs import FINAL as JOB_FINAL
from .jobs import RUNNING, JobQueue
from .store import PURPOSE, Item, StateStore, StoredResponse, insert_items

log = logging.getLogger("multihome.responses")
KIND = "response"  # the job kind of a background response
OPEN = frozenset({"queued", "in_progress"})
Event = tuple[int, bytes]  # (sequence_number, the event's SSE bytes)


class TooManyOpen(Exception):
    """The tenant already has `cap` background jobs queued or running (responses.background.max_open_per_tenant)."""

    def __init__(self, cap: int) -> None:
        super().__init__(cap)
        self.cap = cap


class BackgroundStore:
    def __init__(self, store: StateStore, queue: JobQueue) -> None:
        self.store = store
        self.queue = queue
        self.engine = store.engine

    # -- creating --------------------------------------------------------------------------------------
    async def create(
        self, record: StoredResponse, events: Sequence[Event], *, max_attempts: int, max_open: int | None = None
    ) -> None:
        """Store the queued response, its first events and its job, in one transaction: a response a
        client was told is queued always runs, and a job never runs for a response that is not stored.
        TooManyOpen, with nothing written, when the tenant has `max_open` jobs open already: counted in
        the transaction that inserts, which SQLite's write lock serialises, and PostgreSQL's by a
        transaction-scoped advisory lock of the tenant's taken first (READ COMMITTED: each count then sees
        every insert committed before it; without it, creates racing at the cap each counted before the
        others' inserts and all passed). Only a capped background create takes it."""
        body, size = await self.store.seal_response(record)
        rows = await self._seal_events(record.tenant, record.id, events)
        key = held("responses")
        async with self.store._write(lock=f"background-open:{record.tenant}" if max_open is not None else None) as conn:
            if max_open is not None:
                open_jobs = await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(jobs)
                    .where(jobs.c.tenant_id == record.tenant, jobs.c.status.in_(("queued", RUNNING)))
                )
                if (open_jobs or 0) >= max_open:
                    raise TooManyOpen(max_open)
            await self.store.insert_response(conn, record, body, size)
            await mark_async(conn, key, record.id)  # a keyed create's key, done with its row
            if rows:
                await conn.execute(sa.insert(response_events), rows)
            await self.queue.enqueue(KIND, record.tenant, record.id, max_attempts=max_attempts, conn=conn)

    # -- reading ---------------------------------------------------------------------------------------
    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        return await self.store.get_response(tenant, response_id)

    async def status(self, tenant: str, response_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.scalar(
                sa.select(responses.c.status).where(responses.c.id == response_id, responses.c.tenant_id == tenant)
            )

    async def events_after(self, tenant: str, response_id: str, after: int, limit: int = 1000) -> list[Event]:
        e = response_events
        q = (
            sa.select(e.c.seq, e.c.body)
            .where(e.c.response_id == response_id, e.c.tenant_id == tenant, e.c.seq > after)
            .order_by(e.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        keyring = self.store.keyring
        return [
            (
                r.seq,
                await keyring.open(tenant, PURPOSE, "response_events", f"{response_id}/{r.seq}", stored_bytes(r.body)),
            )
            for r in rows
        ]

    async def last_seq(self, response_id: str) -> int:
        """The last committed event's sequence number (-1 when there is none)."""
        async with self.engine.connect() as conn:
            found = await conn.scalar(
                sa.select(sa.func.max(response_events.c.seq)).where(response_events.c.response_id == response_id)
            )
        return -1 if found is None else int(found)

    # -- a run's writes --------------------------------------------------------------------------------
    async def progress(self, record: StoredResponse, events: Sequence[Event], status: str | None = None) -> bool:
        """Append events (and move the status, e.g. to in_progress, with the response snapshot); False
        when the response is no longer open (cancelled or deleted): the run must stop."""
        if not events and status is None:  # nothing to write: a read says whether to go on
            return await self.status(record.tenant, record.id) in OPEN
        rows = await self._seal_events(record.tenant, record.id, events)
        sealed = await self.store.seal_response(record) if status is not None else None
        async with self.store._write() as conn:
            if not await self._open_locked(conn, record):
                return False
            if rows:
                await conn.execute(sa.insert(response_events), rows)
            if status is not None and sealed is not None:
                await self._update(conn, record.id, status, sealed)
        return True

    async def finish(
        self,
        record: StoredResponse,
        events: Sequence[Event],
        append: Sequence[Item] = (),
        *,
        counted: int | None = None,
        expect_end: int | None = None,
    ) -> bool:
        """Make the response final (`record.status`), with its last events and, for a conversation, its
        turn appended, in one transaction; False when a cancel or delete got there first. `counted` and
        `expect_end`: as `StateStore.append_items`' (the turn's input held to the bound, nothing added or
        deleted since its check); refused (ConversationFull, ConversationChanged), nothing is written."""
        rows = await self._seal_events(record.tenant, record.id, events)
        sealed = await self.store.seal_response(record)
        items = await self.store._seal_items(record.tenant, record.conversation_id, append) if append else []
        bound = self.store.bound if counted is not None else None
        async with self.store._write(lock=record.conversation_id) as conn:
            if not await self._open_locked(conn, record):
                return False
            if rows:
                await conn.execute(sa.insert(response_events), rows)
            await self._update(conn, record.id, record.status, sealed)
            if items and record.conversation_id is not None:
                try:
                    async with conn.begin_nested():  # a savepoint: a refused append leaves the rest
                        await conn.run_sync(
                            insert_items, record.tenant, record.conversation_id, items, bound, expect_end, counted
                        )
                except LookupError:
                    pass  # the conversation was deleted meanwhile: the response is still kept
                except IntegrityError:
                    # An item id another turn appended meanwhile (checked when the turn began): the answer
                    # is kept rather than the job failing and calling the upstream again, attempt by attempt.
                    log.warning(
                        "response %s: not appended to %s (an item id is already there)",
                        record.id,
                        record.conversation_id,
                    )
        return True

    async def keep_partial(self, record: StoredResponse) -> bool:
        """A cancelled response gets the output its run had produced when it stopped (once)."""
        sealed = await self.store.seal_response(record)
        async with self.store._write() as conn:
            done = await conn.execute(
                sa.update(responses)
                .where(responses.c.id == record.id, responses.c.tenant_id == record.tenant)
                .where(responses.c.status == "cancelled")
                .values(body=sealed[0], size=sealed[1])
            )
        return bool(done.rowcount)

    # -- cancelling ------------------------------------------------------------------------------------
    async def cancel(self, record: StoredResponse, cancelled: dict[str, Any]) -> tuple[StoredResponse, bool]:
        """Cancel an open background response: it becomes `cancelled` at once (with the output stored
        so far) and its job is told (a queued one never runs; a running one stops at its next write).
        Returns the response as it now is, and whether a run was under way. Idempotent. One transaction:
        a job cancelled apart from its response (a crash, or the store failing, between two writes) left
        the response open with its job over, answered later as failed, not cancelled."""
        final = replace(record, status="cancelled", response=cancelled)
        body, size = await self.store.seal_response(final)
        async with self.store._write() as conn:
            if await self._open_locked(conn, record):
                job = await self.queue.request_cancel(KIND, record.id, conn=conn)
                await self._update(conn, record.id, "cancelled", (body, size))
                return final, job is not None and job.status == "running"
        found = await self.get(record.tenant, record.id)  # final already (or gone): as it is
        return (found or record), False

    async def settle_orphan(
        self,
        record: StoredResponse,
        failed: dict[str, Any],
        closing: Callable[[int], Sequence[Event]] | None = None,
    ) -> StoredResponse:
        """An open response whose job ended without finishing it (its runs kept dying until the job's
        attempts were used up) is failed, so a poller is not left waiting forever. `closing(seq)`: a
        streamed response's terminal events, numbered from `seq` (after the last committed one), written
        with it, so a client following its stream is sent them and its stream ends."""
        job = await self.queue.get(KIND, record.id)
        if job is None or job.status not in JOB_FINAL:
            return record
        final = replace(record, status="failed", response=failed)
        body, size = await self.store.seal_response(final)
        after = await self.last_seq(record.id) if closing is not None else -1
        rows = await self._seal_events(record.tenant, record.id, closing(after + 1)) if closing is not None else []
        async with self.store._write() as conn:
            if not await self._open_locked(conn, record):
                return await self.get(record.tenant, record.id) or record
            if rows:
                last = await conn.scalar(
                    sa.select(sa.func.max(response_events.c.seq)).where(response_events.c.response_id == record.id)
                )
                if (-1 if last is None else int(last)) != after:  # a late write of a lost run's: the next read
                    return record
                await conn.execute(sa.insert(response_events), rows)
            await self._update(conn, record.id, "failed", (body, size))
        return final

    # -- retention -------------------------------------------------------------------------------------
    async def sweep(self, default_ttl_s: float | None, tenants: dict[str, float], now: datetime | None = None) -> int:
        """Delete responses older than their tenant's TTL, with their stream events and finished jobs;
        returns how many responses were deleted. Conversations are kept (they have their own lifetime)."""
        now = now or datetime.now(UTC)
        r, e = responses, response_events
        deleted = 0
        rules: list[sa.ColumnElement[bool]] = [
            (r.c.tenant_id == tenant) & (r.c.created_at < now - timedelta(seconds=ttl))
            for tenant, ttl in tenants.items()
        ]
        if default_ttl_s is not None:
            others = r.c.tenant_id.not_in(list(tenants)) if tenants else sa.true()
            rules.append(others & (r.c.created_at < now - timedelta(seconds=default_ttl_s)))
        if rules:
            async with self.store._write() as conn:
                ids = list((await conn.execute(sa.select(r.c.id).where(sa.or_(*rules)))).scalars())
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    await conn.execute(sa.delete(e).where(e.c.response_id.in_(chunk)))
                    await conn.execute(sa.delete(r).where(r.c.id.in_(chunk)))
                    await conn.execute(
                        sa.delete(jobs).where(
                            jobs.c.kind == KIND, jobs.c.ref_id.in_(chunk), jobs.c.status.in_(JOB_FINAL)
                        )
                    )
            deleted = len(ids)
            for rid in ids:
                self.store._opened.drop(rid)
        async with self.store._write() as conn:
            # Events or finished jobs whose response is gone (deleted through the API meanwhile).
            gone = ~sa.exists().where(r.c.id == e.c.response_id)
            await conn.execute(sa.delete(e).where(gone))
            orphan = ~sa.exists().where(r.c.id == jobs.c.ref_id)
            await conn.execute(sa.delete(jobs).where(jobs.c.kind == KIND, jobs.c.status != RUNNING, orphan))
        return deleted

    # -- helpers ---------------------------------------------------------------------------------------
    async def _open_locked(self, conn: AsyncConnection, record: StoredResponse) -> bool:
        """Inside a write transaction: lock the response's row (PostgreSQL; SQLite's write lock already
        serialises writers) and say whether it is still open."""
        q = sa.select(responses.c.status).where(responses.c.id == record.id, responses.c.tenant_id == record.tenant)
        if not self.store._sqlite:
            q = q.with_for_update()
        status = await conn.scalar(q)
        return status in OPEN

    @staticmethod
    async def _update(conn: AsyncConnection, response_id: str, status: str, sealed: tuple[bytes, int]) -> None:
        await conn.execute(
            sa.update(responses)
            .where(responses.c.id == response_id)
            .values(status=status, body=sealed[0], size=sealed[1])
        )

    async def _seal_events(self, tenant: str, response_id: str, events: Sequence[Event]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        keyring = self.store.keyring
        return [
            {
                "response_id": response_id,
                "seq": seq,
                "tenant_id": tenant,
                "created_at": now,
                "body": await keyring.seal(tenant, PURPOSE, "response_events", f"{response_id}/{seq}", data),
            }
            for seq, data in events
        ]
