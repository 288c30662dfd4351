"""A client following a background response's stream when the store cannot be read (the database restarting:
a connection reset at the follower's read of the next events): its stream ends with an `error` event,
`storage_unavailable`, naming the `starting_after` to resume with (its `sequence_number` the last event
sent), and a complete body. It was cut off mid-body, with nothing to say where to resume. The run goes on;
the resume from that number reaches response.completed with no number skipped or sent twice. The official
openai SDK against the app in process, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from multihome.api.responses.background import Background
from multihome.simulators import Fault
from stored_app import STORES, sdk_client, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-follow-outage"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_FOLLOW_OUTAGE", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_world(store_url(request, tmp_path), "MH_TEST_FOLLOW_OUTAGE", ADMIN_KEY) as (w, sim, transport):
        yield w, sim, transport


class _OutageMidFollow:
    """The background store's `events_after` failing once, as a reset database connection does, at the
    first read after a follower was sent the events up to the first output item (sequence number 3)."""

    def __init__(self, store) -> None:
        self.fired = 0
        self._events_after, store.events_after = store.events_after, self

    async def __call__(self, tenant, response_id, after, *args, **kwargs):
        if not self.fired and after >= 3:
            self.fired += 1
            raise ConnectionResetError("the database connection was reset")
        return await self._events_after(tenant, response_id, after, *args, **kwargs)


async def test_a_follower_the_store_fails_is_told_where_to_resume_and_resumes(world):
    w, sim, transport = world
    _, key = await w.tenant("acme")
    (background,) = [s for s in w.app.services if isinstance(s, Background)]
    outage = _OutageMidFollow(background.store)
    sdk = sdk_client(key, transport, timeout=60)
    sim.state.faults.add(Fault(chunk_delay_ms=50, chunks=30, times=1))  # the run goes on past the outage
    stream = await sdk.responses.create(model="g", input="follow me", background=True, stream=True)
    seen = [event async for event in stream]
    assert outage.fired == 1
    last = seen[-1]
    # Before: the body cut off after the events sent, no error event to read.
    assert last.type == "error" and last.code == "storage_unavailable", [e.type for e in seen]
    assert last.sequence_number == seen[-2].sequence_number >= 3
    assert f"starting_after={last.sequence_number}" in last.message, last.message
    rest = [
        e
        async for e in await sdk.responses.retrieve(
            seen[0].response.id, stream=True, starting_after=last.sequence_number
        )
    ]
    assert rest and rest[-1].type == "response.completed", [e.type for e in rest]
    numbers = [e.sequence_number for e in seen[:-1] + rest]
    assert numbers == list(range(len(numbers))), numbers
    await sdk.close()
