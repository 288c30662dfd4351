"""The job queue's promises, on SQLite and PostgreSQL: each due job is claimed by exactly one
replica, a dead replica's job is claimed again once its lease runs out, and a replica whose lease
was taken over can no longer write."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from multihome.state.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobQueue, Renewal

pytestmark = pytest.mark.anyio


class Clock:
    """Lease expiry without sleeping: the test moves time on."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def queue(engine, clock):
    queue = JobQueue(engine, clock)
    yield queue
    await queue.close()


async def test_a_job_is_claimed_run_and_finished(queue):
    await queue.enqueue("response", "ten_a", "resp_1")
    assert (await queue.get("response", "resp_1")).status == QUEUED
    [job] = await queue.claim("r1", ["response"], lease_s=30)
    assert (job.ref_id, job.status, job.attempt, job.tenant_id) == ("resp_1", RUNNING, 1, "ten_a")
    assert await queue.claim("r2", ["response"], lease_s=30) == []  # held
    assert await queue.finish(job, "r1", DONE)
    assert (await queue.get("response", "resp_1")).status == DONE
    assert await queue.claim("r2", ["response"], lease_s=30) == []


async def test_a_tenant_at_its_share_of_running_jobs_leaves_the_queue_to_the_others(queue, clock):
    """The queue is first-come: a tenant that queued 10 runs ahead of another's had all 8 of a replica's places
    and the other tenant's run waited for them (an agent run may take an hour). Under a share of 3, a tenant
    runs 3 at once, on every replica together, and the rest of the places go to the others' jobs."""
    for i in range(10):
        await queue.enqueue("response", "ten_a", f"resp_a{i}")
        clock.advance(1)
    for i in range(2):
        await queue.enqueue("response", "ten_b", f"resp_b{i}")
    first = await queue.claim("r1", ["response"], lease_s=30, limit=8, per_tenant=3)
    assert sorted(j.ref_id for j in first) == ["resp_a0", "resp_a1", "resp_a2", "resp_b0", "resp_b1"]
    assert await queue.claim("r2", ["response"], lease_s=30, limit=8, per_tenant=3) == []  # across replicas
    assert await queue.finish(first[0], "r1", DONE)
    [next_a] = await queue.claim("r2", ["response"], lease_s=30, limit=8, per_tenant=3)
    assert next_a.ref_id == "resp_a3"
    clock.advance(31)  # the leases ran out: those jobs no longer count as running, and are taken over as before
    again = await queue.claim("r3", ["response"], lease_s=30, limit=8, per_tenant=3)
    assert sorted(j.ref_id for j in again) == ["resp_a1", "resp_a2", "resp_a3", "resp_b0", "resp_b1"]


async def test_only_the_named_kinds_and_due_jobs_are_claimed(queue, clock):
    await queue.enqueue("run", "ten_a", "run_1")
    await queue.enqueue("response", "ten_a", "resp_later", delay_s=10)
    assert await queue.claim("r1", ["response"], lease_s=30) == []
    clock.advance(11)
    assert [j.ref_id for j in await queue.claim("r1", ["response"], lease_s=30)] == ["resp_later"]


async def test_concurrent_claimers_never_share_a_job(queue):
    for i in range(60):
        await queue.enqueue("response", "ten_a", f"resp_{i}")

    async def claimer(name: str) -> list[str]:
        got = []
        while jobs := await queue.claim(name, ["response"], lease_s=30, limit=3):
            got += [j.ref_id for j in jobs]
        return got

    results = await asyncio.gather(*(claimer(f"r{i}") for i in range(4)))
    claimed = [ref for got in results for ref in got]
    assert sorted(claimed) == sorted(f"resp_{i}" for i in range(60))  # each exactly once


async def test_a_dead_replicas_job_is_taken_over_and_the_old_holder_is_fenced(queue, clock):
    await queue.enqueue("response", "ten_a", "resp_1")
    [old] = await queue.claim("dead", ["response"], lease_s=30)
    clock.advance(20)
    assert await queue.claim("r2", ["response"], lease_s=30) == []  # lease still running
    clock.advance(11)
    [new] = await queue.claim("r2", ["response"], lease_s=30)
    assert new.attempt == 2
    assert not await queue.finish(old, "dead", DONE)  # fenced
    assert await queue.renew(old, "dead", lease_s=30) is Renewal.LOST
    assert (await queue.get("response", "resp_1")).status == RUNNING
    assert await queue.finish(new, "r2", DONE)


async def test_a_restarted_replica_takes_its_dead_incarnations_jobs_back_at_once(queue):
    await queue.enqueue("response", "ten_a", "resp_1")
    await queue.enqueue("response", "ten_a", "resp_2")
    [dead] = await queue.claim("pod-a#host:1:aa", ["response"], lease_s=30)
    [other] = await queue.claim("pod-b#host:2:bb", ["response"], lease_s=30)
    # Another replica cannot take them before their leases run out; pod-a's next incarnation can take its own.
    assert await queue.claim("pod-c#host:3:cc", ["response"], lease_s=30, reclaim="pod-c#") == []
    assert await queue.claim("pod-a#host:1:aa", ["response"], lease_s=30, reclaim="pod-a#") == []  # itself: no
    [back] = await queue.claim("pod-a#host:4:dd", ["response"], lease_s=30, reclaim="pod-a#")
    assert (back.ref_id, back.attempt) == (dead.ref_id, 2) and other.ref_id != dead.ref_id
    assert not await queue.finish(dead, "pod-a#host:1:aa", DONE)  # the dead incarnation is fenced
    # A prefix is matched literally: `pod-%#` names no replica.
    assert await queue.claim("x", ["response"], lease_s=30, reclaim="pod-%#") == []


async def test_a_job_whose_holders_keep_dying_fails(queue, clock):
    await queue.enqueue("response", "ten_a", "resp_1", max_attempts=2)
    for _ in range(2):
        assert len(await queue.claim("dies", ["response"], lease_s=30)) == 1
        clock.advance(31)
    assert await queue.claim("r", ["response"], lease_s=30) == []
    job = await queue.get("response", "resp_1")
    assert (job.status, job.error) == (FAILED, "lease expired")


async def test_retry_backs_off_then_fails_when_attempts_are_used_up(queue, clock):
    await queue.enqueue("response", "ten_a", "resp_1", max_attempts=2)
    [job] = await queue.claim("r1", ["response"], lease_s=30)
    assert await queue.retry(job, "r1", delay_s=5, error="UpstreamDown: 503")
    assert await queue.claim("r1", ["response"], lease_s=30) == []
    clock.advance(5)
    [job] = await queue.claim("r1", ["response"], lease_s=30)
    assert job.attempt == 2 and job.error == "UpstreamDown: 503"
    assert await queue.retry(job, "r1", delay_s=5, error="UpstreamDown: 503 again")
    assert (await queue.get("response", "resp_1")).status == FAILED


async def test_cancel_stops_a_queued_job_at_once_and_a_running_one_at_its_renewal(queue):
    await queue.enqueue("response", "ten_a", "resp_q")
    assert (await queue.request_cancel("response", "resp_q")).status == CANCELLED
    assert await queue.claim("r1", ["response"], lease_s=30) == []
    await queue.enqueue("response", "ten_a", "resp_r")
    [job] = await queue.claim("r1", ["response"], lease_s=30)
    assert await queue.renew(job, "r1", lease_s=30) is Renewal.HELD
    assert (await queue.request_cancel("response", "resp_r")).cancel_requested
    assert await queue.renew(job, "r1", lease_s=30) is Renewal.CANCEL
    assert await queue.finish(job, "r1", CANCELLED)
    assert await queue.request_cancel("response", "nope") is None


async def test_release_hands_a_job_back_without_counting_an_attempt(queue, clock):
    await queue.enqueue("response", "ten_a", "resp_1", max_attempts=1)
    [job] = await queue.claim("closing", ["response"], lease_s=30)
    assert await queue.release(job, "closing")
    [again] = await queue.claim("r2", ["response"], lease_s=30)  # at once, not after the lease
    assert again.attempt == 1


async def test_enqueue_inside_the_callers_transaction_rolls_back_with_it(queue, engine):
    from multihome.storage.engine import write_connection

    conn = await write_connection(engine)
    try:
        async with conn.begin() as tx:
            await queue.enqueue("response", "ten_a", "resp_1", conn=conn)
            await tx.rollback()
    finally:
        await conn.close()
    assert await queue.get("response", "resp_1") is None


async def test_an_idle_poll_on_a_sqlite_file_is_one_read_on_a_thread_of_its_own(queue, engine):
    """The poll every `poll_s` reads on the queue's reader thread (one hand-off, not aiosqlite's many);
    once the queue is closed it reads through the engine, and finds what was queued all the same."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL polls through the engine")
    assert await queue.claim("r1", ["response"], lease_s=30) == []
    assert any(t.name.startswith("mh-jobs-peek") for t in threading.enumerate())
    await queue.enqueue("response", "ten_a", "resp_1")
    await queue.close()
    [job] = await queue.claim("r1", ["response"], lease_s=30)
    assert job.ref_id == "resp_1"


async def test_a_queued_job_whose_time_cannot_be_read_is_failed_not_left_queued(queue, engine):
    """SQLite holds any text in `available_at` (a hand edit): such a job was never due, queued for ever (its
    response never ran nor failed). It is failed, naming the column, and the queue goes on."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's column holds times only")
    stuck = await queue.enqueue("response", "ten_a", "resp_stuck")
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE jobs SET available_at = 'soon' WHERE id = :id"), {"id": stuck})
    await queue.enqueue("response", "ten_a", "resp_next")
    [job] = await queue.claim("r1", ["response"], lease_s=30, limit=5)
    assert job.ref_id == "resp_next"
    failed = await queue.get("response", "resp_stuck")
    assert failed is not None and failed.status == FAILED and "available_at" in (failed.error or "")
    assert await queue.claim("r1", ["response"], lease_s=30) == []


async def test_a_running_job_whose_lease_cannot_be_read_is_failed_not_held_for_ever(queue, engine, clock):
    """SQLite holds any text in `lease_until` (a hand edit): such a job's lease never ran out, so once its
    holder died no replica took it over (its response in progress for ever). It is failed, naming the
    column, and the queue goes on."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's column holds times only")
    await queue.enqueue("response", "ten_a", "resp_stuck")
    [held] = await queue.claim("r1", ["response"], lease_s=30)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE jobs SET lease_until = 'later' WHERE id = :id"), {"id": held.id})
    await queue.enqueue("response", "ten_a", "resp_next")
    clock.advance(3600)  # r1 is long dead: any lease would have run out
    [job] = await queue.claim("r2", ["response"], lease_s=30, limit=5)
    assert job.ref_id == "resp_next"
    failed = await queue.get("response", "resp_stuck")
    assert failed is not None and failed.status == FAILED and "lease_until" in (failed.error or "")
    assert await queue.claim("r2", ["response"], lease_s=30) == []


async def test_a_running_job_whose_lease_cannot_be_read_stays_with_a_holder_that_renews_it(queue, engine, clock):
    """The sweep above must not take a job from a live holder: a lease_until unreadable since the holder's
    last renewal (under a lease ago) is left alone, and the holder's next renewal writes a readable one.
    Where its `updated_at` cannot be read either, the holder's silence is timed from the sweep that saw it.
    A holder that then stops renewing for a lease has its job failed as above."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's column holds times only")
    await queue.enqueue("response", "ten_a", "resp_live")
    [held] = await queue.claim("r1", ["response"], lease_s=30)
    others = []  # other replicas: each sweeps at its first claim
    try:
        for broken in ("lease_until = 'later'", "lease_until = 'later', updated_at = 'whenever'"):
            async with engine.begin() as conn:
                await conn.execute(sa.text(f"UPDATE jobs SET {broken} WHERE id = :id"), {"id": held.id})
            clock.advance(10)  # r1 renews every 10 s: it is at work
            others.append(other := JobQueue(engine, clock))
            assert await other.claim("r2", ["response"], lease_s=30) == []
            assert await queue.renew(held, "r1", lease_s=30) is Renewal.HELD, broken
            assert await queue.lease_until(held) == clock() + timedelta(seconds=30)  # readable again
        async with engine.begin() as conn:  # broken once more, and r1 dies: silent for a whole lease
            broken = "lease_until = 'later', updated_at = 'whenever'"
            await conn.execute(sa.text(f"UPDATE jobs SET {broken} WHERE id = :id"), {"id": held.id})
        assert await other.fail_unreadable(30) == []  # its silence is timed from now
        clock.advance(31)
        assert await other.fail_unreadable(30) == [held.id]
        failed = await queue.get("response", "resp_live")
        assert failed is not None and failed.status == FAILED and "lease_until" in (failed.error or "")
        assert await queue.renew(held, "r1", lease_s=30) is Renewal.LOST
    finally:
        for other in others:
            await other.close()
