"""Idempotency keys (state/idempotency.py) on SQLite and PostgreSQL: of two replicas racing on one
key exactly one runs the create; a done key answers with what it made; another body is a mismatch;
a released key runs again; an abandoned pending key (its replica died) and an expired key are taken
over; keys are per tenant; the sweep deletes expired keys; a key held by a create is done in the
transaction that stores what it made (a replica killed right after that commit leaves no pending key)."""

from __future__ import annotations

import asyncio

import pytest

from multihome.state import StoredResponse
from multihome.state.idempotency import DONE, IN_PROGRESS, MISMATCH, NEW, IdempotencyKeys, digest, holding
from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio
BODY = digest("responses", b'{"model":"m","input":"hi"}')


async def test_one_of_two_replicas_racing_on_a_key_runs_the_create(engine, db_url):
    other = create_engine(db_url)  # a second replica: its own engine and connections
    try:
        a, b = IdempotencyKeys(engine), IdempotencyKeys(other)
        claims = await asyncio.gather(*(k.claim("ten_a", "k1", "responses", BODY) for k in (a, b, a, b)))
        assert sorted(c.outcome for c in claims) == [IN_PROGRESS] * 3 + [NEW]
        await a.done("ten_a", "k1", 200, "resp_1")
        got = await b.claim("ten_a", "k1", "responses", BODY)
        assert (got.outcome, got.status, got.object_id) == (DONE, 200, "resp_1")
        assert (await b.claim("ten_a", "k1", "responses", digest("responses", b"{}"))).outcome == MISMATCH
        assert (await b.claim("ten_a", "k1", "conversations", BODY)).outcome == MISMATCH
        assert (await b.claim("ten_b", "k1", "responses", BODY)).outcome == NEW  # per tenant
    finally:
        await other.dispose()


async def test_released_abandoned_and_expired_keys_run_again(engine):
    keys = IdempotencyKeys(engine)
    assert (await keys.claim("ten_a", "k2", "responses", BODY)).outcome == NEW
    await keys.release("ten_a", "k2")  # the create failed
    assert (await keys.claim("ten_a", "k2", "responses", BODY)).outcome == NEW

    # Windows of a second, not less: on a loaded machine two claims 50 ms apart saw the hold lapse already.
    dying = IdempotencyKeys(engine, pending_s=1)  # a replica killed mid-call: its claim lapses
    assert (await dying.claim("ten_a", "k3", "responses", BODY)).outcome == NEW
    assert (await keys.claim("ten_a", "k3", "responses", BODY)).outcome == IN_PROGRESS
    await asyncio.sleep(1.1)
    assert (await keys.claim("ten_a", "k3", "responses", digest("responses", b"{}"))).outcome == MISMATCH
    assert (await keys.claim("ten_a", "k3", "responses", BODY)).outcome == NEW

    short = IdempotencyKeys(engine, ttl_s=1)
    assert (await short.claim("ten_a", "k4", "responses", BODY)).outcome == NEW
    await short.done("ten_a", "k4", 200, "resp_4")
    assert (await short.claim("ten_a", "k5", "responses", BODY)).outcome == NEW
    await asyncio.sleep(1.1)
    assert (await keys.claim("ten_a", "k4", "responses", digest("responses", b"{}"))).outcome == NEW  # expired
    assert await keys.sweep() == 1  # k5 expired; k4 was taken over with a fresh window


async def test_the_write_that_makes_the_object_marks_its_key_done(engine, state):
    """What `once` (api/responses/idempotent.py) holds while the create runs: the response row, the
    conversation or the added items are committed with their key's completion, so a replica killed before
    `done` (never called here) leaves a key a retry finds done, naming what was made."""
    keys = IdempotencyKeys(engine, pending_s=0.05)  # the hold lapses at once: a takeover would be NEW
    response = StoredResponse(id="resp_k", tenant="ten_a", status="completed", response={"id": "resp_k"}, input=[])
    item = {"id": "msg_k", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    for key, table, write, made in (
        ("k-r", "responses", lambda: state.put_response(response), "resp_k"),
        ("k-c", "conversations", lambda: state.create_conversation("ten_a", "conv_k", {}), "conv_k"),
        ("k-i", "conversation_items", lambda: state.append_items("ten_a", "conv_k", [item]), "msg_k"),
        (  # a turn stored only as its conversation's items (`store: false`): its key names the response id
            "k-t",
            "responses",
            lambda: state.append_items("ten_a", "conv_k", [{**item, "id": "msg_t"}], response_id="resp_t"),
            "resp_t",
        ),
    ):
        assert (await keys.claim("ten_a", key, "ep", BODY)).outcome == NEW
        with holding("ten_a", key, table):
            await write()
        await asyncio.sleep(0.1)
        got = await keys.claim("ten_a", key, "ep", BODY)
        assert (got.outcome, got.status, got.object_id) == (DONE, 200, made), key
    # Another table's write (a conversation made while a response's key is held) does not complete it.
    assert (await keys.claim("ten_a", "k-x", "ep", BODY)).outcome == NEW
    with holding("ten_a", "k-x", "responses"):
        await state.create_conversation("ten_a", "conv_x", {})
    await asyncio.sleep(0.1)
    assert (await keys.claim("ten_a", "k-x", "ep", BODY)).outcome == NEW


async def test_an_unstored_answer_is_kept_sealed_with_its_key_and_done_in_one_write(engine, state):
    """`keep` (a `store: false` create's answer): the key is done with the answer, sealed to that key (a row
    copied to another key does not open: no replay, never another's answer); a key taken over after it
    expired drops it."""
    keys = IdempotencyKeys(engine, keyring=state.keyring, pending_s=0.05)
    answer = b'{"id":"resp_u","output":"the unstored answer"}'
    assert (await keys.claim("ten_a", "k-u", "ep", BODY)).outcome == NEW
    with holding("ten_a", "k-u", "responses") as held:
        await keys.keep(held, "resp_u", answer)
    await asyncio.sleep(0.1)  # a pending key would be taken over by now
    got = await keys.claim("ten_a", "k-u", "ep", BODY)
    assert (got.outcome, got.object_id) == (DONE, "resp_u")
    assert got.answer is not None and b"unstored" not in got.answer
    assert await keys.opened("ten_a", "k-u", got) == answer
    assert await keys.opened("ten_a", "k-other", got) is None  # bound to its key
    assert await IdempotencyKeys(engine).opened("ten_a", "k-u", got) is None  # no keyring: nothing opened

    short = IdempotencyKeys(engine, keyring=state.keyring, ttl_s=0.05)
    assert (await short.claim("ten_a", "k-e", "ep", BODY)).outcome == NEW
    with holding("ten_a", "k-e", "responses") as held:
        await short.keep(held, "resp_e", answer)
    await asyncio.sleep(0.1)
    assert (await keys.claim("ten_a", "k-e", "ep", BODY)).outcome == NEW  # expired: taken over
    await keys.done("ten_a", "k-e", 200, "resp_e2")
    assert (await keys.claim("ten_a", "k-e", "ep", BODY)).answer is None
