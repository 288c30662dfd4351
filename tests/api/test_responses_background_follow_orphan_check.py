"""A follower's look at its response's job (every `_ORPHAN_CHECK_S` while nothing new came) reads the store
too: a store that cannot be read at that read ends the stream as at the follower's other reads, with an
`error` event (`storage_unavailable`) naming the `starting_after` to resume with, and a complete body. The
read went around `stored()`: a connection reset there cut the body off (taken as the client gone). The
official openai SDK against the app in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest

from multihome.api.responses import background as background_module
from multihome.api.responses.background import Background
from multihome.simulators import Fault
from stored_app import STORES, sdk_client, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-follow-orphan-check"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_FOLLOW_ORPHAN_CHECK", ADMIN_KEY)
    monkeypatch.setattr(background_module, "_ORPHAN_CHECK_S", 0.0)  # the job looked at on every idle round


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_world(store_url(request, tmp_path), "MH_TEST_FOLLOW_ORPHAN_CHECK", ADMIN_KEY) as (
        w,
        sim,
        transport,
    ):
        yield w, sim, transport


class _OutageAtOrphanCheck:
    """The background store's `get` failing once, as a reset database connection does, when the follower
    looks at its response's job after it was sent the events up to the first output item (number 3)."""

    def __init__(self, store) -> None:
        self.fired = 0
        self._get, store.get = store.get, self

    async def __call__(self, *args, **kwargs):
        caller = sys._getframe(1)
        while caller is not None and caller.f_code.co_name != "follow":  # (through `stored`, with the fix)
            caller = caller.f_back
        if not self.fired and caller is not None and caller.f_locals.get("after", -1) >= 3:
            self.fired += 1
            raise ConnectionResetError("the database connection was reset")
        return await self._get(*args, **kwargs)


async def test_a_follower_the_store_fails_at_its_job_check_is_told_where_to_resume(world):
    w, sim, transport = world
    _, key = await w.tenant("acme")
    (background,) = [s for s in w.app.services if isinstance(s, Background)]
    outage = _OutageAtOrphanCheck(background.store)
    sdk = sdk_client(key, transport, timeout=60)
    sim.state.faults.add(Fault(chunk_delay_ms=50, chunks=30, times=1))  # idle rounds between the events
    stream = await sdk.responses.create(model="g", input="follow me", background=True, stream=True)
    seen = [event async for event in stream]
    assert outage.fired == 1
    last = seen[-1]
    # Before: the body cut off after the events sent, no error event to read.
    assert last.type == "error" and last.code == "storage_unavailable", [e.type for e in seen]
    assert last.sequence_number == seen[-2].sequence_number >= 3
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
