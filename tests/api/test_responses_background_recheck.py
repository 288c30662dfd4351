"""A background Responses turn whose append must be checked again (an item was added to its conversation
while the model answered) and whose recheck cannot read the store (a 503 `storage_unavailable`): the run's
final write is tried again in place (api/responses/runner.py `_through_outage`; before, the run raised and its
job ran the turn again, the model called twice), instead of ending the response `failed` with an outage that
was not the turn's fault (api/responses/final_turn.py). The retry completes it and the conversation holds the
turn once. The official openai SDK against the app in process, with one
simulated upstream, on SQLite and PostgreSQL; the store made unavailable at exactly that read, once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from admin_http import ok
from multihome.simulators import Fault
from multihome.state.service import StateService
from stored_app import STORES, sdk_client, store_url, stored_world, until

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-background-recheck"
HOLD_MS = 1500  # the upstream's first answer is held this long: the add goes in meanwhile
DEADLINE = 90  # seconds: a condition polled for (the job's retry backoff is a few seconds)


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_BG_RECHECK", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_world(store_url(request, tmp_path), "MH_TEST_BG_RECHECK", ADMIN_KEY) as (world, sim, transport):
        yield world, sim, transport


class _OutageAtNextItemsRead:
    """The state store's `items` (what the append's recheck reads) failing once, when armed, as a database
    connection reset does (storage/errors.py `unavailable`: a 503 `storage_unavailable`)."""

    def __init__(self, store) -> None:
        self.armed = False
        self.fired = 0
        self._items = store.items
        store.items = self

    async def __call__(self, *args, **kwargs):
        if self.armed:
            self.armed = False
            self.fired += 1
            raise ConnectionResetError("the database connection was reset")
        return await self._items(*args, **kwargs)


async def test_a_recheck_that_cannot_read_the_store_retries_the_final_write_which_appends_once(world):
    w, sim, transport = world
    tenant, key = await w.tenant("acme")
    (state,) = [s for s in w.app.services if isinstance(s, StateService)]
    outage = _OutageAtNextItemsRead(state.store)
    sdk = sdk_client(key, transport)
    call = {"type": "function_call", "call_id": "call_w", "name": "get_weather", "arguments": "{}"}
    conv = await sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "weather?"}, call])
    result = {"type": "function_call_output", "call_id": "call_w", "output": "sunny"}
    sim.state.faults.add(Fault(latency_ms=HOLD_MS, times=1))

    # Its input answers a call: the append is conditional on the conversation's end as read at the start.
    created = await sdk.responses.create(model="g", conversation=conv.id, input=[result], background=True)
    assert created.status in ("queued", "in_progress")

    async def received() -> bool:
        return sim.state.stats.requests >= 1

    await until(received, "the upstream never received the run's call", DEADLINE)
    meanwhile = {"type": "message", "role": "user", "content": "and tomorrow?"}
    await sdk.conversations.items.create(conv.id, items=[meanwhile])  # moves the end: the append rechecks
    outage.armed = True  # the next read of items is the recheck's

    async def final():
        got = await sdk.responses.retrieve(created.id)
        return got if got.status not in ("queued", "in_progress") else None

    done = await until(final, "the response never ended", DEADLINE)
    # Without final_turn.py's re-raise (before 8257381): `failed`, the outage shown as the turn's error.
    assert done.status == "completed", (done.status, done.error)
    assert outage.fired == 1 and not outage.armed
    assert sim.state.stats.requests == 1, "the final write was tried again, not the run: one upstream call"

    items = [i async for i in sdk.conversations.items.list(conv.id, limit=100, order="asc")]
    kinds = [(i.type, getattr(i, "call_id", None) or getattr(i, "role", None)) for i in items]
    assert kinds == [
        ("message", "user"),
        ("function_call", "call_w"),
        ("message", "user"),  # the add made meanwhile
        ("function_call_output", "call_w"),  # the turn's input, once
        ("message", "assistant"),  # its answer, once
    ], kinds
    assert items[-1].content[0].text == done.output_text

    # Billed once however often it ran: one usage row, keyed by the response's request id.
    usage = await ok(await w.call("GET", f"/admin/v1/tenants/{tenant}/usage"))
    assert [row["calls"] for row in usage["data"]] == [1], usage
    await sdk.close()
