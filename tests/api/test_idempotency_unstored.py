"""`Idempotency-Key` on a `store: false` response with no conversation: no object is stored, so the
answer itself is kept with the key (sealed) and the key marked done in one transaction before the answer
is sent. A retry gets the same answer (200, `idempotent-replayed: true`), not a second upstream call and
bill, also when the replica died between its answer and the key's old mark after the answer (injected here:
`done` fails, as a replica killed there never calls it; the key's 15-minute hold then lapses). A streamed
one's retry gets 409 naming it, never a second call. The official openai SDK against the app in process,
on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from multihome.state.idempotency import IdempotencyKeys
from multihome.storage.tables import idempotency_keys
from stored_app import STORES, StoredWorld, sdk_client, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-unstored-idempotency"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_IDEM_UNSTORED", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_world(store_url(request, tmp_path), "MH_TEST_IDEM_UNSTORED", ADMIN_KEY) as (w, sim, transport):
        yield w, sim, transport


async def _create(sdk: openai.AsyncOpenAI, idem: str, text: str, **extra):
    raw = await sdk.responses.with_raw_response.create(
        model="g", input=text, store=False, extra_headers={"Idempotency-Key": idem}, **extra
    )
    return raw.parse(), raw.headers


async def _rows(url: str, query: str) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text(query))).all())
    finally:
        await engine.dispose()


def _dies_before_done(monkeypatch) -> None:
    """The replica is killed right after its answer: the key's mark after the answer never happens."""

    async def killed(self, *args, **kwargs):
        raise ConnectionError("the replica died")

    monkeypatch.setattr(IdempotencyKeys, "done", killed)


async def _hold_lapsed(w: StoredWorld) -> None:
    """The 15 minutes after which a pending key is taken over have passed."""
    engine = create_async_engine(w.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.update(idempotency_keys).values(locked_until=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    finally:
        await engine.dispose()


async def test_a_retry_of_an_unstored_response_gets_the_same_answer_once(world):
    w, sim, transport = world
    _, key = await w.tenant("acme")
    sdk = sdk_client(key, transport)

    first, headers = await _create(sdk, "u-1", "answer me once")
    assert "idempotent-replayed" not in headers
    again, headers = await _create(sdk, "u-1", "answer me once")
    assert headers["idempotent-replayed"] == "true"
    assert again.id == first.id and again.output_text == first.output_text and again.store is False
    assert sim.state.stats.requests == 1
    # Kept sealed: the answer's text is nowhere in the key's row; nothing is a stored response.
    [(answer,)] = await _rows(w.url, "SELECT answer FROM idempotency_keys WHERE key = 'u-1'")
    assert answer and first.output_text.encode() not in bytes(answer)
    assert await _rows(w.url, "SELECT id FROM responses") == []
    with pytest.raises(openai.NotFoundError):  # store: false is still not retrievable
        await sdk.responses.retrieve(first.id)


async def test_a_replica_dead_before_the_old_mark_leaves_the_retry_a_replay(world, monkeypatch):
    w, sim, transport = world
    _, key = await w.tenant("acme")
    sdk = sdk_client(key, transport)
    _dies_before_done(monkeypatch)

    first, _ = await _create(sdk, "u-2", "made before the kill")
    await _hold_lapsed(w)
    again, headers = await _create(sdk, "u-2", "made before the kill")
    assert sim.state.stats.requests == 1, "the retry called the upstream again (a second bill)"
    assert (again.id, again.output_text) == (first.id, first.output_text)
    assert headers["idempotent-replayed"] == "true"

    # Streamed: the retry cannot be the stream again, but it is a 409 naming it, not a second call.
    stream = await sdk.responses.create(
        model="g", input="streamed once", store=False, stream=True, extra_headers={"Idempotency-Key": "u-3"}
    )
    streamed = [event async for event in stream]
    made = streamed[-1].response.id
    await _hold_lapsed(w)
    with pytest.raises(openai.ConflictError) as err:
        await _create(sdk, "u-3", "streamed once", stream=True)
    assert err.value.code == "idempotency_key_used" and made in err.value.message
    assert sim.state.stats.requests == 2
