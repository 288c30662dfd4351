"""The job worker against a real database: handlers run once per claim, failures back off and
retry, cancels reach a running handler, a closing replica hands its jobs back, and a replica
killed with SIGKILL mid-job has the job finished by another."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from held_rows import hold_rows, no_collection
from multihome.state.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobQueue
from multihome.state.worker import JobWorker
from multihome.storage import engine as engine_module
from multihome.storage.engine import create_engine
from multihome.storage.tables import jobs

pytestmark = pytest.mark.anyio
SRC = Path(__file__).resolve().parents[2] / "src"


async def until(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_handlers_run_and_jobs_end_done(engine):
    queue = JobQueue(engine)
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.ref_id)

    worker = JobWorker(queue, {"response": handler}, concurrency=2, poll_s=0.05)
    await worker.start()
    try:
        for i in range(5):
            await queue.enqueue("response", "ten_a", f"resp_{i}")
        worker.notify()
        for i in range(5):
            assert await until(lambda i=i: _is(queue, f"resp_{i}", DONE))
    finally:
        await worker.close()
    assert sorted(ran) == [f"resp_{i}" for i in range(5)]


async def _is(queue: JobQueue, ref: str, status: str) -> bool:
    job = await queue.get("response", ref)
    return job is not None and job.status == status


async def test_a_failing_handler_is_retried_then_the_job_fails(engine):
    queue = JobQueue(engine)
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("upstream said no")

    worker = JobWorker(queue, {"response": handler}, poll_s=0.05, max_backoff_s=0.1)
    await worker.start()
    try:
        await queue.enqueue("response", "ten_a", "resp_1", max_attempts=3)
        assert await until(lambda: _is(queue, "resp_1", FAILED))
    finally:
        await worker.close()
    assert attempts == [1, 2, 3]
    assert (await queue.get("response", "resp_1")).error == "RuntimeError: upstream said no"


async def test_a_job_failed_for_good_is_handed_to_its_kinds_gave_up_hook(engine):
    """Its record is still open (no run finished it): the hook settles it, once, whether its last run
    raised or its last holder died (the lease ran out at a claim)."""
    queue = JobQueue(engine)
    gave_up: list[tuple[str, str, int]] = []

    async def raises(job: Job) -> None:
        raise RuntimeError("upstream said no")

    async def hook(job: Job) -> None:
        gave_up.append((job.ref_id, (await queue.get("response", job.ref_id)).status, job.attempt))

    await queue.enqueue("response", "ten_a", "resp_dead", max_attempts=1)
    [held] = await queue.claim("a-replica-that-dies", ["response"], lease_s=0.2)
    assert held.ref_id == "resp_dead"
    worker = JobWorker(queue, {"response": raises}, poll_s=0.05, max_backoff_s=0.1, gave_up={"response": hook})
    await worker.start()
    try:
        await queue.enqueue("response", "ten_a", "resp_raises", max_attempts=2)
        worker.notify()
        assert await until(lambda: _async(len(gave_up) == 2))
        await asyncio.sleep(0.3)  # and no more
    finally:
        await worker.close()
    assert sorted(gave_up) == [("resp_dead", FAILED, 1), ("resp_raises", FAILED, 2)]
    assert (await queue.get("response", "resp_dead")).error == "lease expired"


async def test_a_worker_does_not_take_its_own_running_job_again_when_its_renewal_is_late(engine):
    """Its lease ran out while it runs it (a renewal late on a busy loop or a slow commit, as here by
    writing the lease into the past): the worker's next claim leaves the job to the run it has, whose
    renewal extends the lease. It took it again: a second run of the job in one process (a second
    upstream call), the first cancelled as having lost its lease; or, its attempts used up, failed."""
    queue = JobQueue(engine)
    runs: list[int] = []
    release = asyncio.Event()

    async def slow(job: Job) -> None:
        runs.append(job.attempt)
        await release.wait()

    worker = JobWorker(queue, {"response": slow}, poll_s=0.05, lease_s=3.0)
    await worker.start()
    try:
        await queue.enqueue("response", "ten_a", "resp_1", max_attempts=1)
        worker.notify()
        assert await until(lambda: _async(runs == [1]))
        for _ in range(3):  # each renewal (every second) puts the lease back: run it out again meanwhile
            await _lease_in_the_past(engine, "resp_1")
            await asyncio.sleep(0.3)  # six polls of the worker, each finding the job's lease run out
        assert runs == [1]
        job = await queue.get("response", "resp_1")
        assert (job.status, job.attempt) == (RUNNING, 1)
        release.set()
        assert await until(lambda: _is(queue, "resp_1", DONE))
    finally:
        release.set()
        await worker.close()
    assert runs == [1]


async def _lease_in_the_past(engine, ref: str) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    async with engine.begin() as conn:
        await conn.execute(sa.update(jobs).where(jobs.c.ref_id == ref).values(lease_until=past))


async def _async(value: object) -> object:
    return value


async def test_a_cancel_request_stops_the_running_handler(engine):
    queue = JobQueue(engine)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    worker = JobWorker(queue, {"response": handler}, lease_s=0.3, poll_s=0.05)
    await worker.start()
    try:
        await queue.enqueue("response", "ten_a", "resp_1")
        await asyncio.wait_for(started.wait(), 20)
        await queue.request_cancel("response", "resp_1")
        await asyncio.wait_for(stopped.wait(), 20)
        assert await until(lambda: _is(queue, "resp_1", CANCELLED))
    finally:
        await worker.close()


async def test_a_runs_lease_renewal_has_ended_when_the_run_has(engine):
    """A job that ends while its lease's renewal is writing: the run waits for the renewal to end, so none writes on
    after the job is let go, nor into the worker's close (the queue's connections closed under it)."""
    queue = JobQueue(engine)
    renewing: list[asyncio.Task] = []

    async def stuck_renew(*args, **kwargs):  # a renewal's write that has not come back (a slow commit)
        renewing.append(asyncio.current_task())
        await asyncio.Event().wait()

    queue.renew = stuck_renew

    async def handler(job: Job) -> None:
        await until(lambda: asyncio.sleep(0, bool(renewing)))  # ends while its renewal is writing

    worker = JobWorker(queue, {"response": handler}, lease_s=0.3)
    try:
        await queue.enqueue("response", "ten_a", "resp_1")
        [job] = await queue.claim(worker.owner, ["response"], lease_s=30)
        await worker._run(job)  # in this task: what it left running is seen as it returns
        assert renewing and renewing[0].done(), "the renewal runs on after its job's run"
        assert (await queue.get("response", "resp_1")).status == DONE
    finally:
        await worker.close()


async def test_a_run_waiting_for_its_renewal_to_end_is_still_cancelled_by_its_own_cancellation(engine):
    """A renewal slow to end (its write finishing) holds its run's end, but not the run's own cancellation (a
    close): that propagates, it is not taken for the renewal's."""
    queue = JobQueue(engine)
    renewing, let_go = asyncio.Event(), asyncio.Event()

    async def slow_to_end(*args, **kwargs):
        renewing.set()
        try:
            await asyncio.Event().wait()
        finally:
            await let_go.wait()

    queue.renew = slow_to_end

    async def handler(job: Job) -> None:
        await renewing.wait()

    worker = JobWorker(queue, {"response": handler}, lease_s=0.3)
    try:
        await queue.enqueue("response", "ten_a", "resp_1")
        [job] = await queue.claim(worker.owner, ["response"], lease_s=30)
        run = asyncio.create_task(worker._run(job))
        assert await until(lambda: _is(queue, "resp_1", DONE))  # settled; now waiting for its renewal
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 30)  # (swallowed, it would end within cancel_and_wait's 10 s)
    finally:
        let_go.set()
        await worker.close()


async def test_a_closing_replica_hands_its_jobs_back(engine):
    queue = JobQueue(engine)
    started = asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    first = JobWorker(queue, {"response": slow}, poll_s=0.05, lease_s=60)
    await first.start()
    await queue.enqueue("response", "ten_a", "resp_1", max_attempts=1)
    await asyncio.wait_for(started.wait(), 20)
    await first.close()
    assert (await queue.get("response", "resp_1")).status == QUEUED

    done: list[int] = []

    async def quick(job: Job) -> None:
        done.append(job.attempt)

    second = JobWorker(queue, {"response": quick}, poll_s=0.05)
    await second.start()
    try:
        assert await until(lambda: _is(queue, "resp_1", DONE))  # at once: not after the 60 s lease
    finally:
        await second.close()
    assert done == [1]


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from multihome.state.jobs import JobQueue
    from multihome.state.worker import JobWorker
    from multihome.storage.engine import create_engine

    async def main(url, marker):
        async def handler(job):
            Path(marker).write_text(job.id)
            await asyncio.sleep(3600)  # killed here

        worker = JobWorker(JobQueue(create_engine(url)), {"response": handler}, lease_s=1.0, poll_s=0.05)
        await worker.start()
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_job_of_a_replica_killed_mid_run_is_finished_by_another(engine, db_url, tmp_path):
    queue = JobQueue(engine)
    await queue.enqueue("response", "ten_a", "resp_1")
    marker = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url, str(marker)], env=env)
    try:
        assert await until(lambda: _exists(marker), timeout=30), "the child never started the job"
        assert (await queue.get("response", "resp_1")).status == RUNNING
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)

    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.attempt)

    worker = JobWorker(queue, {"response": handler}, poll_s=0.05)
    await worker.start()
    try:
        assert await until(lambda: _is(queue, "resp_1", DONE), timeout=30)
    finally:
        await worker.close()
    assert ran == [2]  # taken over once the dead replica's lease ran out: its second attempt


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_a_database_outage_is_one_warning_not_one_per_poll(engine, caplog):
    """Every poll meets the outage; the log says it once, with the driver's words and no traceback (one line per
    poll, twice a second, buried the rest of the log: 1,193 lines in 70 s at poll_s 0.05), then once in
    INFO when the queue answers again."""
    queue = JobQueue(engine)
    real, refusals = queue.claim, [0]

    async def refused(*args, **kwargs):
        if refusals[0] >= 200:
            return await real(*args, **kwargs)
        refusals[0] += 1
        driver = ConnectionRefusedError(111, "Connection refused")
        raise sa.exc.OperationalError("SELECT", {"secret": "p4ss"}, driver) from driver  # as SQLAlchemy wraps it

    queue.claim = refused  # type: ignore[method-assign]
    worker = JobWorker(queue, {"response": _async}, poll_s=0.001)
    caplog.set_level("INFO", logger="multihome.jobs")
    await worker.start()
    try:
        back = "job queue reachable again"
        assert await until(lambda: _async(any(back in r.message for r in caplog.records)), timeout=60)
    finally:
        await worker.close()
    polls = [r for r in caplog.records if "job queue unreachable" in r.message]
    assert 1 <= len(polls) <= 2, [r.message for r in polls]  # 200 failed polls in far less than a minute: one
    assert not any(r.exc_info for r in polls), "no traceback"
    assert "ConnectionRefusedError: [Errno 111] Connection refused" in polls[0].message, polls[0].message
    assert "p4ss" not in caplog.text
    (recovered,) = [r for r in caplog.records if back in r.message]
    assert recovered.levelname == "INFO" and "200 failures" in recovered.message, recovered.message


async def test_an_outcome_not_recorded_in_an_outage_is_one_line_not_a_traceback(caplog):
    """A job ended while the database was away: its outcome's write fails, which is said in a line with the
    driver's words (the lease runs out and the job runs again), not a traceback through the driver and the pool."""

    async def refused() -> bool:
        driver = ConnectionRefusedError(111, "Connection refused")
        raise sa.exc.OperationalError("UPDATE", {}, driver) from driver  # as SQLAlchemy wraps the driver's

    assert await JobWorker._settle(refused()) is False
    [line] = [r for r in caplog.records if "could not record a job's outcome" in r.message]
    assert not line.exc_info and "ConnectionRefusedError: [Errno 111] Connection refused" in line.message, line.message

    async def broken() -> bool:
        raise ValueError("a bug")

    assert await JobWorker._settle(broken()) is False
    assert [bool(r.exc_info) for r in caplog.records if "could not record" in r.message] == [False, True]


async def test_a_replica_closing_mid_claim_on_sqlite_still_hands_its_jobs_back(sqlite_database, monkeypatch, caplog):
    """The stop cancels the claim loop while a claim's UPDATE ... RETURNING rows come back to it (a busy loop makes
    that a long moment): its connection lets go of SQLite's write lock, so the running job's release is written.
    Before, the lock stayed with that connection until the garbage collector ran: every later write, the release
    first, waited out the busy timeout (a stop under load took 38 s, storage/engine.py `_finish_statement`)."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 1000)  # a held lock fails the release soon
    engine = create_engine(sqlite_database())
    queue = JobQueue(engine)
    started, landed = asyncio.Event(), asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    worker = JobWorker(queue, {"response": slow}, poll_s=0.05, lease_s=60)
    try:
        await worker.start()
        await queue.enqueue("response", "ten_a", "resp_1")
        await asyncio.wait_for(started.wait(), 20)
        hold_rows(monkeypatch, landed, lambda sql: sql.startswith("UPDATE jobs") and "attempt=(jobs.attempt + " in sql)
        with no_collection():
            await queue.enqueue("response", "ten_a", "resp_2")  # claimed next: its rows are held back
            await asyncio.wait_for(landed.wait(), 20)
            await worker.close()
            assert (await queue.get("response", "resp_1")).status == QUEUED, caplog.text  # handed back
    finally:
        await worker.close()
        await engine.dispose()
