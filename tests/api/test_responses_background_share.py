"""A tenant's running background responses are capped (responses.background.max_running_per_tenant): the job
queue is shared and first-come, and one tenant's queued runs that never end (an agent run may take an hour)
took every place a replica had, so another tenant's run stayed queued behind them. Past its share a tenant's
runs wait queued and the others' run. The official openai SDK against the app in process, on SQLite and
PostgreSQL; the upstream never answers acme's model, and answers other's."""

from __future__ import annotations

import asyncio
import time

import pytest

from stored_app import STORES, hung_world, sdk_client

pytestmark = pytest.mark.anyio


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    """Model group `g` never answers (acme's), `fast` does (other's)."""
    responses = {"background": {"concurrency": 2, "max_running_per_tenant": 1, "poll_s": 0.1}}
    async with hung_world(request, tmp_path, groups={"fast": "answers"}, responses=responses) as (w, _, transport):
        yield w, transport


async def test_a_tenant_whose_runs_never_end_leaves_places_for_the_others(world):
    w, transport = world
    _, acme_key = await w.tenant("acme")
    _, other_key = await w.tenant("other")
    acme = sdk_client(acme_key, transport)
    held = [await acme.responses.create(model="g", input="hi", background=True) for _ in range(4)]
    deadline = time.monotonic() + 60
    while (await acme.responses.retrieve(held[0].id)).status != "in_progress":  # acme's first run holds a place
        assert time.monotonic() < deadline, "acme's first run did not start"
        await asyncio.sleep(0.1)

    other = sdk_client(other_key, transport)
    queued = await other.responses.create(model="fast", input="hi", background=True)
    while (found := await other.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"other's run is still {found.status} behind acme's"
        await asyncio.sleep(0.1)
    assert found.status == "completed"
    # acme's others wait their turn: one of its runs at a time, the rest queued.
    statuses = [(await acme.responses.retrieve(r.id)).status for r in held]
    assert statuses.count("in_progress") == 1 and statuses.count("queued") == 3
