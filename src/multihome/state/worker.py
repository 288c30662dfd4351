"""Runs the job queue's jobs on this replica: claim, run the kind's handler, renew, settle.

One loop per replica claims due jobs up to `concurrency` and runs each in its own task beside a
renewal task that extends the lease every third of its length. What ends a job:

- the handler returns: `done`;
- the handler raises: queued again after a backoff (`failed` once its attempts are used up), with
  the exception's class and message as the job's error (handlers raise without content);
- its holders died `max_attempts` times (found at a claim): `failed`;
- a cancel was asked for (seen at a renewal): the handler is cancelled, then `cancelled`;
- the lease was lost (this replica stalled past it and another took over): the handler is
  cancelled and nothing is written — the new holder owns the job;
- the replica shuts down: handlers are cancelled and their jobs handed back (`release`), so
  another replica resumes them at once instead of after the lease.

A handler is `async (job) -> None` and must checkpoint its steps so a second run after a crash
skips what the first one finished (at-least-once execution, exactly-once effects). A kind may have a
`gave_up` hook, `async (job) -> None`, called once its job is `failed` for good (attempts used up): the
record the job worked on is still open (no run finished it), and the hook settles it, so it does not
stay in progress for ever. A hook that fails leaves it to whoever reads the record next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from ..aio import cancel_and_wait, wait_event
from ..crypto.errors import KmsError
from ..outage_log import OutageLog
from ..storage.errors import outage
from .jobs import CANCELLED, DONE, Job, JobQueue, Renewal

log = logging.getLogger("multihome.jobs")

Handler = Callable[[Job], Coroutine[Any, Any, None]]
GaveUp = Callable[[Job], Awaitable[None]]
_LOST = "lost"


def replica_name(replica_id: str | None = None) -> str:
    """Unique per process: host, pid and a random suffix (a restarted pid is a new owner); with a
    stable replica id, `<id>#` first, so its next incarnation knows its jobs (`JobQueue.claim`)."""
    suffix = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    return f"{replica_id}#{suffix}" if replica_id else suffix


class JobWorker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        owner: str | None = None,
        replica_id: str | None = None,
        concurrency: int = 4,
        per_tenant: int | None = None,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        max_backoff_s: float = 60.0,
        gave_up: Mapping[str, GaveUp] | None = None,
    ) -> None:
        self.queue = queue
        self.handlers = dict(handlers)
        self.gave_up = dict(gave_up or {})
        self._settling: set[asyncio.Task[None]] = set()
        self.owner = owner or replica_name(replica_id)
        # Jobs a dead incarnation of this replica held are taken back at once (not after their lease).
        self.reclaim = f"{replica_id}#" if replica_id else None
        self.concurrency = concurrency
        self.per_tenant = per_tenant  # one tenant's jobs running at once, on every replica together (None: no share)
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    def notify(self) -> None:
        """A job was queued here: claim now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="multihome-jobs")

    async def close(self) -> None:
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        running = [*self._running.values(), *self._settling]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self.queue.close()  # the poll's reader thread: this worker was its only user

    @property
    def active(self) -> int:
        return len(self._running)

    async def _loop(self) -> None:
        kinds = list(self.handlers)
        unreachable = OutageLog(log, "job queue unreachable", recovered="job queue reachable again")
        while not self._closing:
            self._wake.clear()  # before claiming: a job queued during the claim wakes the next round
            free = self.concurrency - len(self._running)
            if free > 0:
                gave_up: list[Job] = []
                try:
                    jobs = await self.queue.claim(
                        self.owner,
                        kinds,
                        lease_s=self.lease_s,
                        limit=free,
                        reclaim=self.reclaim,
                        gave_up=gave_up,
                        running=set(self._running),  # its own, however late their renewal: not orphans here
                        per_tenant=self.per_tenant,
                    )
                except Exception as exc:
                    unreachable.failed(exc, traceback=outage(exc) is None)
                    jobs = []
                else:
                    unreachable.ok()
                for job in gave_up:
                    self._give_up(job)
                for job in jobs:
                    self._running[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                if len(jobs) == free:
                    continue  # there may be more due: claim again before sleeping
            await wait_event(self._wake, self.poll_s)

    async def _run(self, job: Job) -> None:
        work = asyncio.create_task(self.handlers[job.kind](job))
        renewal = asyncio.create_task(self._renew_until_done(job, work), name=f"job-{job.id}-renewal")
        try:
            try:
                await asyncio.wait({work})
            except asyncio.CancelledError:  # this replica is closing: hand the job back
                work.cancel()
                await asyncio.wait({work})
                await self._settle(self.queue.release(job, self.owner))
                return
            if work.cancelled():  # the renewal stopped it: a cancel request, or the lease was lost
                verdict = await renewal
                if verdict == _LOST:
                    log.warning("job %s: lease lost to another replica; left to it", job.id)
                else:
                    await self._settle(self.queue.finish(job, self.owner, CANCELLED))
            elif (exc := work.exception()) is not None:
                delay = min(self.max_backoff_s, 2.0**job.attempt)
                error = f"{type(exc).__name__}: {exc}"
                if await self._settle(self.queue.retry(job, self.owner, delay_s=delay, error=error)):
                    if job.attempt >= job.max_attempts:  # failed for good (JobQueue.retry)
                        self._give_up(job)
            else:
                await self._settle(self.queue.finish(job, self.owner, DONE))
        finally:
            self._running.pop(job.id, None)
            self._wake.set()  # a slot is free
            # Its renewal ended too: none writes on after the job is let go, nor into a close (this task's own
            # cancellation still propagates).
            await cancel_and_wait(renewal)

    async def _renew_until_done(self, job: Job, work: asyncio.Task[None]) -> str:
        """Renew the lease until the work ends; cancel the work on a cancel request or a lost lease."""
        failing = OutageLog(log, f"job {job.id}: lease renewal failed", recovered=f"job {job.id}: lease renewed again")
        while not work.done():
            await asyncio.sleep(self.lease_s / 3)
            try:
                renewal = await self.queue.renew(job, self.owner, lease_s=self.lease_s)
            except Exception as exc:
                failing.failed(exc, traceback=outage(exc) is None)
                continue
            failing.ok()
            if renewal is not Renewal.HELD:
                work.cancel()
                return CANCELLED if renewal is Renewal.CANCEL else _LOST
        return DONE

    def _give_up(self, job: Job) -> None:
        """Run the kind's `gave_up` hook on a job failed for good, beside the claim loop (a slow store
        must not hold up claiming)."""
        hook = self.gave_up.get(job.kind)
        if hook is None:
            return
        log.warning("job %s (%s %s) failed: its attempts are used up", job.id, job.kind, job.ref_id)
        task = asyncio.create_task(self._settle_given_up(hook, job), name=f"job-gave-up-{job.id}")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    @staticmethod
    async def _settle_given_up(hook: GaveUp, job: Job) -> None:
        try:
            await hook(job)
        except Exception as exc:
            why = _outage(exc)
            log.warning(
                "job %s: its record could not be settled (%s); left to its next read",
                job.id,
                why or exc,
                exc_info=why is None,
            )

    @staticmethod
    async def _settle(write: Awaitable[bool]) -> bool:
        try:
            if not await write:
                log.warning("job settled elsewhere: this replica's lease had been taken over")
                return False
        except Exception as exc:
            # The lease runs out and another replica runs the job again (its steps are checkpointed).
            why = _outage(exc)
            log.warning("could not record a job's outcome (%s); it will be retried", why or exc, exc_info=why is None)
            return False
        return True


def _outage(exc: BaseException) -> str | None:
    """The database away, or the KMS unreachable or refusing (its words name it, never a key): one line, not a
    traceback through the driver, the pool or the KMS client. None for anything else (the traceback is worth it)."""
    return outage(exc) or (str(exc) if isinstance(exc, KmsError) else None)
