"""A tenant-admin creating and revoking keys in a tight loop (docs/storage.md "How a change reaches the other
replicas"): snapshot_changes stays bounded by what the store keeps (CHANGES_KEPT versions, pruned every
CHANGES_PRUNE_EVERY), a second replica (a SnapshotCache on a store handle of its own) ends with what a whole
read gives, and another tenant's chat calls, made with the official openai SDK meanwhile, are all served.
The app in process, on SQLite and PostgreSQL; the limits made small so that the loop prunes many times."""

from __future__ import annotations

import asyncio
import os

import pytest
import sqlalchemy as sa

from admin_http import ok
from multihome.storage import SnapshotCache, base, open_store
from multihome.storage.tables import snapshot_changes
from stored_app import STORES, sdk_client, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-snapshot-churn"
KEPT, PRUNE_EVERY = 60, 20
# A create and a revoke each: two writes (MH_TEST_CHURN_CYCLES=1000: the 2,000 writes of a longer run by hand).
CYCLES = int(os.environ.get("MH_TEST_CHURN_CYCLES", "100"))


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_SNAPSHOT_CHURN", ADMIN_KEY)
    monkeypatch.setattr(base, "CHANGES_KEPT", KEPT)
    monkeypatch.setattr(base, "CHANGES_PRUNE_EVERY", PRUNE_EVERY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    async with stored_world(url, "MH_TEST_SNAPSHOT_CHURN", ADMIN_KEY) as parts:
        yield (*parts, url)


async def _changes_held(store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(snapshot_changes))).scalar_one())


async def test_key_churn_keeps_the_change_log_bounded_and_replicas_and_calls_going(world):
    w, _, transport, url = world
    churner, admin = await w.tenant("churner")
    _, caller = await w.tenant("bystander")
    replica_store = await open_store(url)
    replica = SnapshotCache(replica_store, interval_s=3600)  # refreshed by the loop below, not on a timer
    await replica.refresh()
    churning, held, served = True, [], []

    async def churn() -> None:
        keys = f"/admin/v1/tenants/{churner}/keys"
        for i in range(CYCLES):
            made = await ok(await w.call("POST", keys, admin, json={"name": f"churn-{i}"}), 201)
            await ok(await w.call("DELETE", f"{keys}/{made['id']}", admin))

    async def call_meanwhile() -> None:
        client = sdk_client(caller, transport)
        while churning:
            answer = await client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}])
            served.append(answer.id)

    async def reload_meanwhile() -> None:
        while churning:
            await replica.refresh()
            held.append(await _changes_held(replica_store))
            await asyncio.sleep(0.01)

    try:
        calling, reloading = asyncio.create_task(call_meanwhile()), asyncio.create_task(reload_meanwhile())
        await churn()
        churning = False
        await asyncio.gather(calling, reloading)  # a call that failed raises here
        held.append(await _changes_held(replica_store))
        # Rows stamped since the last prune, and the writes' own rows before their stamp: a version a row each.
        assert max(held) <= KEPT + PRUNE_EVERY + 4, held
        snap = await replica.refresh()
        whole = await replica_store.snapshot()
        assert snap.keys == whole.keys and snap.version == whole.version
        assert sum(1 for k in snap.keys.values() if k.tenant_id == churner and k.revoked_at is None) == 1  # admin's
        assert served
    finally:
        await replica_store.close()
