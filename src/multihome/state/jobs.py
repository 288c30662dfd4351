"""The durable job queue: background work that outlives the request and the replica that took it.

A job is a row in `jobs` (storage/tables.py) naming the sealed record it works on (`kind`,
`ref_id`: a background response, an agent run). A replica claims a job by taking its lease for a
while and renews it while it works; a replica that dies stops renewing, and once the lease has run
out any replica may claim the job again. Every write after a claim is fenced by (owner, attempt),
so a replica whose lease was taken over can no longer finish or fail the job.

On PostgreSQL replicas claim with `FOR UPDATE SKIP LOCKED`, so concurrent claims never wait on each
other nor take the same job; on SQLite the write transaction (BEGIN IMMEDIATE) serialises them.
Lease times are the replicas' clocks (UTC): leases are tens of seconds, well above NTP skew.

On SQLite a column holds whatever was written (a hand edit, a row another version wrote): a queued job
whose `available_at` is not a time compares as text, after every time, so it would never be due (its
response queued for ever, holding a slot of its tenant's `max_open_per_tenant`); likewise a running
job whose `lease_until` is not a time never runs out of lease, so no replica ever takes it over once
its holder dies (its response in progress for ever). Every minute a claiming replica fails such jobs,
naming the column in the job's error and in its log; their responses then read as failed
(api/responses/background.py `current`). A running job is failed only once its holder has been silent
for a whole lease: every renewal writes `updated_at` (and a readable `lease_until`), so a holder still at
work (renewing every third of its lease) keeps its job, while a dead one's row is failed a lease after
its last renewal. Where `updated_at` cannot be read either, the sweep sets it to now: the lease it
waits for starts then. PostgreSQL's columns hold times only.

Execution is at least once: a job whose replica died after its last checkpoint runs again from
that checkpoint. The job's handler keeps its own steps idempotent (state/worker.py).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..storage.base import as_utc
from ..storage.engine import is_sqlite, write_connection
from ..storage.ids import new_id
from ..storage.pg_reads import HeldReads
from ..storage.sqlite_readers import SqliteReaders, read_whole, usable
from ..storage.tables import jobs as t

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = frozenset({DONE, FAILED, CANCELLED})
_ERROR_CHARS = 1000  # the column's width
log = logging.getLogger("multihome.jobs")
UNREADABLE_EVERY_S = 60.0  # how often a claiming SQLite replica looks for jobs whose time is not one
# SQLite's datetime() is NULL for text that is not a time (a number reads as a Julian day: due, so claimed).
_QUEUED_UNREADABLE = (t.c.status == QUEUED) & sa.func.datetime(t.c.available_at).is_(None)
_LEASE_UNREADABLE = (t.c.status == RUNNING) & sa.func.datetime(t.c.lease_until).is_(None)
_RENEWAL_UNREADABLE = sa.func.datetime(t.c.updated_at).is_(None)
_QUEUED_ERROR = "unreadable row: its available_at cannot be read as a time (the job was never due)"
_LEASE_ERROR = "unreadable row: its lease_until cannot be read as a time (its lease never ran out)"


def _unreadable(silent_since: datetime) -> tuple[tuple[sa.ColumnElement[bool], str], ...]:
    """(which jobs, their error): a queued job by when it is due; a running one by when its lease runs out,
    once its holder has not renewed it since `silent_since` (a lease ago)."""
    silent = ~_RENEWAL_UNREADABLE & (t.c.updated_at < silent_since)
    return ((_QUEUED_UNREADABLE, _QUEUED_ERROR), (_LEASE_UNREADABLE & silent, _LEASE_ERROR))


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    tenant_id: str
    kind: str
    ref_id: str
    status: str
    attempt: int  # 1 on the first claim; with the owner it fences every later write
    max_attempts: int
    cancel_requested: bool
    error: str | None = None


class Renewal(enum.Enum):
    HELD = "held"  # the lease is extended
    CANCEL = "cancel"  # extended, but a cancel was asked for: stop and finish as cancelled
    LOST = "lost"  # another replica holds the job now (or it ended): stop without writing


_COLUMNS = (
    t.c.id,
    t.c.tenant_id,
    t.c.kind,
    t.c.ref_id,
    t.c.status,
    t.c.attempt,
    t.c.max_attempts,
    t.c.cancel_requested,
    t.c.error,
)


def _job(r: sa.Row) -> Job:
    return Job(r.id, r.tenant_id, r.kind, r.ref_id, r.status, r.attempt, r.max_attempts, r.cancel_requested, r.error)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class JobQueue:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = _utcnow) -> None:
        self.engine = engine
        self.clock = clock
        # A SQLite file: an idle replica's poll (`claim`'s peek, every `poll_s`) in one thread hand-off
        # instead of aiosqlite's ~25 (storage/sqlite_readers.py); its thread is made at the first poll.
        self._reads = SqliteReaders(engine, name="mh-jobs-peek") if usable(engine) else None
        # PostgreSQL: the peek alone on a held connection, one round trip instead of the engine's six
        # (storage/pg_reads.py).
        self._pg_reads = HeldReads(engine, size=1) if not is_sqlite(engine) else None
        self._peeks: dict[tuple[tuple[str, ...], str, str | None, int | None], sa.Select[tuple[str]]] = {}
        self._unreadable_at: datetime | None = datetime.min.replace(tzinfo=UTC) if is_sqlite(engine) else None

    async def close(self) -> None:
        """Stop the poll's reader thread (a later poll reads through the engine); give back its held
        connection (a later poll checks one out for itself)."""
        if self._reads is not None:
            await self._reads.close()
        if self._pg_reads is not None:
            await self._pg_reads.close()

    # -- producers --------------------------------------------------------------------------
    async def enqueue(
        self,
        kind: str,
        tenant: str,
        ref_id: str,
        *,
        max_attempts: int = 3,
        delay_s: float = 0.0,
        conn: AsyncConnection | None = None,
    ) -> str:
        """Queue a job; inside `conn`'s transaction when given (stored with the record it works on)."""
        now = self.clock()
        job_id = new_id("job")
        stmt = sa.insert(t).values(
            id=job_id,
            tenant_id=tenant,
            kind=kind,
            ref_id=ref_id,
            status=QUEUED,
            attempt=0,
            max_attempts=max_attempts,
            available_at=now + timedelta(seconds=delay_s),
            cancel_requested=False,
            created_at=now,
            updated_at=now,
        )
        if conn is not None:
            await conn.execute(stmt)
        else:
            await self._write(stmt)
        return job_id

    async def get(self, kind: str, ref_id: str) -> Job | None:
        async with self.engine.connect() as conn:
            r = (await conn.execute(sa.select(*_COLUMNS).where(t.c.kind == kind, t.c.ref_id == ref_id))).first()
        return None if r is None else _job(r)

    async def request_cancel(self, kind: str, ref_id: str, *, conn: AsyncConnection | None = None) -> Job | None:
        """A queued job is cancelled at once; a running one is told at its next renewal. Inside `conn`'s
        transaction when given (with the record's own cancel: a crash cannot keep one without the other)."""
        if conn is not None:
            return await self._request_cancel(conn, kind, ref_id)
        own = await write_connection(self.engine)
        try:
            async with own.begin():
                return await self._request_cancel(own, kind, ref_id)
        finally:
            await own.close()

    async def _request_cancel(self, conn: AsyncConnection, kind: str, ref_id: str) -> Job | None:
        now = self.clock()
        where = (t.c.kind == kind, t.c.ref_id == ref_id)
        await conn.execute(sa.update(t).where(*where, t.c.status == QUEUED).values(status=CANCELLED, updated_at=now))
        await conn.execute(
            sa.update(t).where(*where, t.c.status == RUNNING).values(cancel_requested=True, updated_at=now)
        )
        r = (await conn.execute(sa.select(*_COLUMNS).where(*where))).first()
        return None if r is None else _job(r)

    # -- workers ----------------------------------------------------------------------------
    async def claim(
        self,
        owner: str,
        kinds: Iterable[str],
        *,
        lease_s: float,
        limit: int = 1,
        reclaim: str | None = None,
        gave_up: list[Job] | None = None,
        running: Collection[str] = (),
        per_tenant: int | None = None,
    ) -> list[Job]:
        """Take up to `limit` jobs that are due, or whose holder's lease ran out. `reclaim`: an owner
        prefix naming this replica's earlier incarnations (`<replica id>#`): their running jobs are
        orphans at once, since one live process holds a replica id (the worker's own are not).
        `gave_up` receives the orphans failed here because their attempts are used up (their records
        are still open: the worker has them settled, else they would stay in progress for ever).
        `running`: the ids of the jobs the claiming worker is running now. One of them whose lease ran out
        (its renewal late: a busy loop, a slow commit) is not an orphan to it: taken again, it ran twice in
        one process (a second upstream call, the first run cancelled at its next renewal), or, its
        attempts used up, was failed under its own run. Its renewal extends the lease as it comes.
        `per_tenant`: a tenant with this many of these kinds' jobs running (leases not run out, on any replica)
        has none claimed; the others' are, in their order, so one tenant's queue cannot hold the rest behind it."""
        kinds = list(kinds)
        now = self.clock()
        if self._unreadable_at is not None and now >= self._unreadable_at:
            self._unreadable_at = now + timedelta(seconds=UNREADABLE_EVERY_S)
            await self.fail_unreadable(lease_s)
        # An idle replica polls: a read first, so finding nothing takes no write lock (SQLite's is the
        # whole database's, wanted by every usage batch and stored response).
        peek = self._peek_statement(tuple(kinds), owner, reclaim, per_tenant)
        if self._pg_reads is not None:
            if not await self._pg_reads.fetch(peek, {"now": now}):
                return []
        elif await read_whole(self._reads, self.engine, lambda conn: conn.scalar(peek, {"now": now})) is None:
            return []
        orphaned, due = _claimable(now, owner, reclaim)
        if running:  # not in the peek (a statement kept per worker): a peek that finds only these writes nothing
            orphaned = orphaned & t.c.id.not_in(sorted(running))
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                # A job whose holders died `max_attempts` times is not tried again.
                exhausted = await conn.execute(
                    sa.update(t)
                    .where(t.c.kind.in_(kinds), orphaned, t.c.attempt >= t.c.max_attempts)
                    .values(status=FAILED, lease_owner=None, lease_until=None, error="lease expired", updated_at=now)
                    .returning(*_COLUMNS)
                )
                failed = [_job(r) for r in exhausted]
                claimable = due | orphaned
                if per_tenant is not None:
                    claimable = claimable & _below_share(t.c.kind.in_(kinds), now, per_tenant)
                # Under a share, one at a time: each claim counts towards its tenant's running jobs for the next.
                batch = limit if per_tenant is None else 1
                claimed: list[Job] = []
                while len(claimed) < limit:
                    pick = (
                        sa.select(t.c.id)
                        .where(t.c.kind.in_(kinds), claimable)
                        .order_by(t.c.available_at, t.c.id)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                    )
                    rows = await conn.execute(
                        sa.update(t)
                        .where(t.c.id.in_(pick.scalar_subquery()))
                        .values(
                            status=RUNNING,
                            lease_owner=owner,
                            lease_until=now + timedelta(seconds=lease_s),
                            attempt=t.c.attempt + 1,
                            updated_at=now,
                        )
                        .returning(*_COLUMNS)
                    )
                    taken = [_job(r) for r in rows]
                    claimed += taken
                    if len(taken) < batch:
                        break
        finally:
            await conn.close()
        if gave_up is not None:
            gave_up += failed
        return claimed

    async def fail_unreadable(self, lease_s: float) -> list[str]:
        """Fail the queued jobs whose `available_at`, and the running ones whose `lease_until`, is not a
        time and whose holder has not renewed them for `lease_s` (SQLite: see the module's docstring).
        -> their ids. A read first: finding none (the rule) takes no write lock."""
        now = self.clock()
        failed: list[str] = []
        async with self.engine.connect() as conn:
            unknown = (await conn.execute(sa.select(t.c.id).where(_LEASE_UNREADABLE, _RENEWAL_UNREADABLE))).first()
        if unknown is not None:  # a holder's silence is timed from its last renewal: from now, if that is unreadable
            await self._write(sa.update(t).where(_LEASE_UNREADABLE, _RENEWAL_UNREADABLE).values(updated_at=now))
        for rule, error in _unreadable(now - timedelta(seconds=lease_s)):
            async with self.engine.connect() as conn:
                ids = list((await conn.execute(sa.select(t.c.id).where(rule).limit(100))).scalars())
            if ids:
                await self._write(
                    sa.update(t)
                    .where(t.c.id.in_(ids), rule)
                    .values(status=FAILED, error=error, lease_owner=None, lease_until=None, updated_at=self.clock())
                )
                log.warning("jobs %s failed: %s", ", ".join(ids), error)
                failed += ids
        return failed

    def _peek_statement(
        self, kinds: tuple[str, ...], owner: str, reclaim: str | None, per_tenant: int | None
    ) -> sa.Select[tuple[str]]:
        """The poll's statement, built once per worker: SQLAlchemy keys a statement for its compiled
        cache at every execution unless it is the same object (the key is kept on it), and keying a
        new one cost more than the poll's query (10-13 % of an idle gateway's instructions). On PostgreSQL the
        kinds are bound one by one, not as an expanding IN list, which a held read cannot take."""
        key = (kinds, owner, reclaim, per_tenant)
        stmt = self._peeks.get(key)
        if stmt is None:
            if len(self._peeks) > 64:  # bounded: one worker polls with one owner and one list of kinds
                self._peeks.clear()
            now = sa.bindparam("now", type_=t.c.available_at.type)
            orphaned, due = _claimable(now, owner, reclaim)
            listed = t.c.kind.in_(kinds if self._pg_reads is None else [sa.literal(k, t.c.kind.type) for k in kinds])
            # A tenant at its share is left out here too: its queued jobs alone do not take the write lock.
            claimable = due | orphaned
            if per_tenant is not None:
                claimable = claimable & _below_share(listed, now, per_tenant)
            stmt = self._peeks[key] = sa.select(t.c.id).where(listed, claimable).limit(1)
        return stmt

    async def renew(self, job: Job, owner: str, *, lease_s: float) -> Renewal:
        now = self.clock()
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                r = (
                    await conn.execute(
                        sa.update(t)
                        .where(*self._held(job, owner))
                        .values(lease_until=now + timedelta(seconds=lease_s), updated_at=now)
                        .returning(t.c.cancel_requested)
                    )
                ).first()
        finally:
            await conn.close()
        if r is None:
            return Renewal.LOST
        return Renewal.CANCEL if r.cancel_requested else Renewal.HELD

    async def finish(self, job: Job, owner: str, status: str, error: str | None = None) -> bool:
        """done, failed or cancelled; False when the lease was lost (the write did not happen)."""
        assert status in FINAL, status
        return await self._fenced(job, owner, status=status, error=_clip(error), lease_owner=None, lease_until=None)

    async def retry(self, job: Job, owner: str, *, delay_s: float, error: str) -> bool:
        """Queue the job again after `delay_s`, or fail it when its attempts are used up."""
        if job.attempt >= job.max_attempts:
            return await self.finish(job, owner, FAILED, error)
        available = self.clock() + timedelta(seconds=delay_s)
        return await self._fenced(
            job, owner, status=QUEUED, error=_clip(error), lease_owner=None, lease_until=None, available_at=available
        )

    async def release(self, job: Job, owner: str) -> bool:
        """Hand a job back at shutdown: queued at once, and this claim does not count as an attempt."""
        return await self._fenced(
            job,
            owner,
            status=QUEUED,
            lease_owner=None,
            lease_until=None,
            available_at=self.clock(),
            attempt=t.c.attempt - 1,
        )

    async def purge(self, kind: str, before: datetime) -> int:
        """Delete this kind's jobs that ended before `before` (housekeeping of recurring jobs)."""
        return await self._write(sa.delete(t).where(t.c.kind == kind, t.c.status.in_(FINAL), t.c.updated_at < before))

    async def lease_until(self, job: Job) -> datetime | None:
        async with self.engine.connect() as conn:
            value = (await conn.execute(sa.select(t.c.lease_until).where(t.c.id == job.id))).scalar()
        return as_utc(value)

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _held(job: Job, owner: str) -> tuple[sa.ColumnElement[bool], ...]:
        return (t.c.id == job.id, t.c.status == RUNNING, t.c.lease_owner == owner, t.c.attempt == job.attempt)

    async def _fenced(self, job: Job, owner: str, **values: object) -> bool:
        result = await self._write(
            sa.update(t).where(*self._held(job, owner)).values(updated_at=self.clock(), **values)
        )
        return bool(result)

    async def _write(self, stmt: sa.Executable) -> int:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                result = await conn.execute(stmt)
        finally:
            await conn.close()
        return result.rowcount


def _claimable(now: Any, owner: str, reclaim: str | None) -> tuple[sa.ColumnElement[bool], sa.ColumnElement[bool]]:
    """(orphaned, due) at `now` (a time, or a bound parameter standing for it): see `JobQueue.claim`."""
    orphaned = (t.c.status == RUNNING) & (t.c.lease_until < now)
    if reclaim is not None:
        mine = t.c.lease_owner.startswith(reclaim, autoescape=True) & (t.c.lease_owner != owner)
        orphaned = orphaned | ((t.c.status == RUNNING) & mine)
    return orphaned, (t.c.status == QUEUED) & (t.c.available_at <= now)


def _below_share(listed: sa.ColumnElement[bool], now: Any, per_tenant: int) -> sa.ColumnElement[bool]:
    """A job whose tenant has fewer than `per_tenant` of the `listed` kinds' jobs running (a lease not run out)."""
    busy = (
        sa.select(t.c.tenant_id)
        .where(listed, t.c.status == RUNNING, t.c.lease_until >= now)
        .group_by(t.c.tenant_id)
        .having(sa.func.count() >= per_tenant)
    )
    return t.c.tenant_id.not_in(busy)


def _clip(error: str | None) -> str | None:
    return None if error is None else error[:_ERROR_CHARS]
