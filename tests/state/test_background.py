"""Background responses in the store, on SQLite and PostgreSQL: the queued response and its job are
stored together, events come back in order and sealed, the first final write wins (a cancel stops a
run's later writes), a run that finds its response final calls nothing, and retention deletes for real."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from multihome.state import StateStore, StoredResponse
from multihome.state.background import KIND, BackgroundStore, TooManyOpen
from multihome.state.jobs import CANCELLED, DONE, JobQueue
from multihome.state.worker import JobWorker
from multihome.storage.engine import create_engine
from multihome.storage.errors import Conflict
from multihome.storage.tables import jobs, response_events, responses

pytestmark = pytest.mark.anyio
MARKER = "PLAINTEXT-MARKER-background-5e1b"


def _queued(rid: str, tenant: str = "t1", created: datetime | None = None) -> StoredResponse:
    return StoredResponse(
        id=rid,
        tenant=tenant,
        status="queued",
        response={"id": rid, "object": "response", "status": "queued", "output": [], "background": True},
        input=[
            {"id": f"msg_{rid}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": MARKER}]}
        ],
        created_at=created or datetime.now(UTC),
        background={"request": "{}", "principal": {"tenant": tenant}, "request_id": f"req_{rid}", "stream": True},
    )


def _event(seq: int, text: str = MARKER) -> tuple[int, bytes]:
    return seq, f'event: x\ndata: {{"sequence_number":{seq},"t":"{text}"}}\n\n'.encode()


@pytest.fixture
async def bg(state):
    queue = JobQueue(state.engine)
    yield BackgroundStore(state, queue)
    await queue.close()  # its poll's held connection (PostgreSQL), reader thread (SQLite)


async def test_a_queued_response_is_stored_with_its_job_and_first_events(bg):
    await bg.create(_queued("resp_a"), [_event(0), _event(1)], max_attempts=3)
    job = await bg.queue.get(KIND, "resp_a")
    assert job is not None and job.status == "queued" and job.tenant_id == "t1" and job.max_attempts == 3
    got = await bg.get("t1", "resp_a")
    assert got is not None and got.status == "queued" and got.background["request_id"] == "req_resp_a"
    assert [s for s, _ in await bg.events_after("t1", "resp_a", -1)] == [0, 1]
    assert await bg.events_after("t2", "resp_a", -1) == []  # another tenant reads nothing
    assert await bg.last_seq("resp_a") == 1
    async with bg.engine.connect() as conn:  # nothing in clear
        bodies = (await conn.execute(sa.select(response_events.c.body))).scalars().all()
        body = (await conn.execute(sa.select(responses.c.body))).scalar_one()
    assert all(MARKER.encode() not in bytes(b) for b in [*bodies, body])


async def test_a_failed_create_leaves_neither_response_nor_events(bg):
    await bg.queue.enqueue(KIND, "t1", "resp_b")  # the job's insert, last in the transaction, will conflict
    with pytest.raises(Conflict):
        await bg.create(_queued("resp_b"), [_event(0)], max_attempts=3)
    assert await bg.get("t1", "resp_b") is None and await bg.events_after("t1", "resp_b", -1) == []


async def test_after_a_cancel_a_run_can_neither_append_nor_finish(bg):
    record = _queued("resp_a")
    await bg.create(record, [_event(0)], max_attempts=3)
    running = replace(record, status="in_progress")
    assert await bg.progress(running, [_event(1)], status="in_progress")
    now, _ = await bg.cancel(running, {"id": "resp_a", "status": "cancelled", "output": []})
    assert now.status == "cancelled"
    assert not await bg.progress(running, [_event(2)])
    assert not await bg.finish(replace(running, status="completed"), [_event(2)])
    got = await bg.get("t1", "resp_a")
    assert got.status == "cancelled" and [s for s, _ in await bg.events_after("t1", "resp_a", -1)] == [0, 1]
    again, _ = await bg.cancel(got, {"status": "cancelled"})  # idempotent: the stored answer comes back
    assert again.status == "cancelled"
    partial = {**got.response, "output": [{"type": "message", "id": "msg_1", "content": []}]}
    assert await bg.keep_partial(replace(got, response=partial))
    assert (await bg.get("t1", "resp_a")).response["output"][0]["id"] == "msg_1"


async def test_the_first_final_write_wins(bg):
    record = _queued("resp_a")
    await bg.create(record, [], max_attempts=3)
    done = replace(record, status="completed", response={**record.response, "status": "completed"})
    assert await bg.finish(done, [_event(0)])
    assert not await bg.finish(replace(done, status="failed"), [_event(1)])
    now, running = await bg.cancel(done, {"status": "cancelled"})
    assert now.status == "completed" and not running  # too late to cancel: the final response stands


async def test_a_run_that_finds_its_response_final_calls_nothing(bg, state):
    """The checkpoint: the response was made final, then the replica died before its job was done.
    The job's next run must finish it without an upstream call (here: without running the turn)."""
    from multihome.api.responses.runner import Runner
    from multihome.state.feed import Feed

    record = _queued("resp_a")
    await bg.create(record, [], max_attempts=3)
    assert await bg.finish(replace(record, status="completed"), [])

    class NoPipeline:
        def __getattr__(self, name):
            raise AssertionError("a finished response was run again")

    runner = Runner(NoPipeline(), lambda: bg, Feed(), flush_s=0.05)  # type: ignore[arg-type]
    worker = JobWorker(bg.queue, {KIND: runner.run}, poll_s=0.05, lease_s=5)
    await worker.start()
    try:
        deadline = time.monotonic() + 20
        while (job := await bg.queue.get(KIND, "resp_a")).status != DONE and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
    assert job.status == DONE and job.error is None


async def test_a_cancelled_queued_response_never_runs(bg):
    record = _queued("resp_a")
    await bg.create(record, [], max_attempts=3)
    _, running = await bg.cancel(record, {"status": "cancelled"})
    assert not running and (await bg.queue.get(KIND, "resp_a")).status == CANCELLED


async def test_retention_deletes_old_responses_their_events_and_jobs_per_tenant(bg, state):
    old = datetime.now(UTC) - timedelta(hours=2)
    await bg.create(_queued("resp_old", created=old), [_event(0)], max_attempts=1)
    await bg.create(_queued("resp_new"), [_event(0)], max_attempts=1)
    await bg.create(_queued("resp_kept", tenant="t2", created=old), [_event(0)], max_attempts=1)
    await bg.queue.request_cancel(KIND, "resp_old")  # its job is over
    deleted = await bg.sweep(3600, {"t2": 86400})  # t1: an hour; t2 keeps a day
    assert deleted == 1
    assert await bg.get("t1", "resp_old") is None and await bg.events_after("t1", "resp_old", -1) == []
    assert await bg.queue.get(KIND, "resp_old") is None
    assert await bg.get("t1", "resp_new") is not None and await bg.get("t2", "resp_kept") is not None
    assert await bg.sweep(None, {"t2": 60}) == 1  # the override alone applies when there is no default
    assert await bg.get("t2", "resp_kept") is None and await bg.get("t1", "resp_new") is not None
    async with bg.engine.connect() as conn:
        left = (await conn.execute(sa.select(response_events.c.response_id))).scalars().all()
        job_refs = (await conn.execute(sa.select(jobs.c.ref_id))).scalars().all()
    assert left == ["resp_new"] and "resp_kept" not in job_refs


async def test_a_response_whose_job_gave_up_is_failed_not_left_open(bg):
    record = _queued("resp_a")
    await bg.create(record, [], max_attempts=1)
    assert (await bg.settle_orphan(record, {"status": "failed"})).status == "queued"  # its job is still due
    job = (await bg.queue.claim("replica-1", [KIND], lease_s=30))[0]
    assert await bg.queue.retry(job, "replica-1", delay_s=0, error="RuntimeError: boom")  # attempts used up
    assert (await bg.queue.get(KIND, "resp_a")).status == "failed"
    settled = await bg.settle_orphan(record, {"status": "failed"})
    assert settled.status == "failed" and (await bg.get("t1", "resp_a")).status == "failed"


async def test_a_turn_whose_item_id_another_turn_appended_meanwhile_still_finishes(bg, state):
    """The append is refused (ids are unique per conversation) but the response is final and kept: the
    job must not fail and run the turn (an upstream call) again, attempt by attempt."""
    await state.create_conversation("t1", "conv_dup", {}, [{"id": "msg_taken", "type": "message", "role": "user"}])
    record = replace(_queued("resp_dup"), conversation_id="conv_dup")
    await bg.create(record, [], max_attempts=3)
    done = replace(record, status="completed", response={**record.response, "status": "completed"})
    turn = [{"id": "msg_taken", "type": "message", "role": "user"}, {"id": "msg_answer", "type": "message"}]
    assert await bg.finish(done, [_event(0)], append=turn)
    got = await bg.get("t1", "resp_dup")
    assert got is not None and got.status == "completed"
    assert [s for s, _ in await bg.events_after("t1", "resp_dup", -1)] == [0]
    page = await state.items("t1", "conv_dup")
    assert page is not None and [i["id"] for i in page.items] == ["msg_taken"]  # no half turn either


async def _fail_writes_of_cancelled_responses(engine) -> None:
    """The store failing at a cancel's write of the response (as a crash between two writes would leave it)."""
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_cancel BEFORE UPDATE OF status ON responses "
                    "WHEN NEW.status = 'cancelled' BEGIN SELECT RAISE(ABORT, 'the store failed'); END"
                )
            )
        else:
            await conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse_cancel() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'the store failed'; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_cancel BEFORE UPDATE ON responses FOR EACH ROW "
                    "WHEN (NEW.status = 'cancelled') EXECUTE FUNCTION refuse_cancel()"
                )
            )


@pytest.mark.parametrize("claimed", [False, True])
async def test_a_cancel_that_cannot_write_the_response_leaves_its_job_alone(bg, claimed):
    """The job's cancel and the response's are one transaction: apart, a cancel whose second write failed (or
    a kill between the two) left the response open with its job cancelled, later answered as failed."""
    record = _queued("resp_a")
    await bg.create(record, [], max_attempts=3)
    if claimed:
        await bg.queue.claim("replica-1", [KIND], lease_s=30)
    await _fail_writes_of_cancelled_responses(bg.engine)
    with pytest.raises(Exception, match="the store failed"):
        await bg.cancel(record, {"status": "cancelled"})
    job = await bg.queue.get(KIND, "resp_a")
    assert (job.status, job.cancel_requested) == (("running" if claimed else "queued"), False)
    got = await bg.get("t1", "resp_a")
    assert (await bg.settle_orphan(got, {"status": "failed"})).status == "queued"  # still open, still due


async def test_creates_racing_at_a_tenants_cap_never_pass_it(bg, db_url):
    """`max_open_per_tenant` under concurrency: creates on four replicas (engines of their own) racing at the
    cap. Counted and inserted in one transaction, which SQLite's write lock serialises; on PostgreSQL each
    could count before the others' inserts, and as many passed as raced. A per-tenant advisory lock holds it."""
    cap = 3
    engines = [create_engine(db_url) for _ in range(4)]
    queues = [JobQueue(e) for e in engines]
    try:
        replicas = [BackgroundStore(StateStore(e, bg.store.keyring), q) for e, q in zip(engines, queues, strict=True)]
        for tenant in ("t1", "t2", "t3"):  # a few rounds: a race is likely in each, certain in none
            creates = [
                replicas[i % 4].create(_queued(f"resp_{tenant}_{i}", tenant), [], max_attempts=1, max_open=cap)
                for i in range(16)
            ]
            results = await asyncio.gather(*creates, return_exceptions=True)
            assert all(r is None or isinstance(r, TooManyOpen) for r in results), results
            assert sum(r is None for r in results) == cap, tenant
            async with bg.engine.connect() as conn:
                count = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.tenant_id == tenant)
                assert await conn.scalar(count) == cap
        await bg.create(_queued("resp_other", "t4"), [], max_attempts=1, max_open=cap)  # per tenant
    finally:
        for q in queues:
            await q.close()
        for e in engines:
            await e.dispose()
