"""A replica's snapshot reload reads only the rows changed since the snapshot it holds (storage/snapshot_load.py),
and ends with what a whole read would give: writes, revocations, deletes (with their cascades), unreadable rows,
a replica that missed many changes, and one that missed more than the store keeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from multihome.storage import SnapshotCache, base, snapshot_load
from multihome.storage.snapshot import Snapshot
from multihome.storage.tables import api_keys, budgets, state_version

pytestmark = pytest.mark.anyio
KINDS = [kind.name for kind in snapshot_load.KINDS]  # the tables the snapshot holds


def _meaning(snap: Snapshot) -> dict:
    """What a snapshot says (the order of its unreadable rows aside), without what it was built from."""
    out = {f: getattr(snap, f) for f in Snapshot.__struct_fields__ if f not in ("held", "unreadable")}
    out["unreadable"] = set(snap.unreadable)
    return out


async def _replica(store2) -> SnapshotCache:
    cache = SnapshotCache(store2, interval_s=3600)  # never polls: each test refreshes it
    await cache.refresh()
    return cache


async def _reload(cache: SnapshotCache, store) -> dict[str, int]:
    """Refresh `cache`, check it says what a whole read says, and return the rows its reload read per table."""
    snap = await cache.refresh()
    whole = await store.snapshot()
    assert _meaning(snap) == _meaning(whole)
    return {k: n for k, n in snap.held.read.items() if n}


async def _tenant_with_rows(store, name: str, keys: int = 5):
    t = await store.create_tenant(name, actor="admin")
    team = await store.create_team(t.id, "ml", actor="admin")
    made = [await store.create_key(t.id, name=f"k{i}", team_id=team.id, actor="admin") for i in range(keys)]
    pol = await store.create_policy(t.id, scope="tenant", scope_id=t.id, rules={"r": [1]}, actor="admin")
    return t, team, made, pol


async def test_a_replica_reads_only_the_rows_each_write_changed(store, store2):
    t, team, made, pol = await _tenant_with_rows(store, "a", keys=20)
    await _tenant_with_rows(store, "b", keys=20)
    cache = await _replica(store2)
    assert cache.snapshot.held.read["api_keys"] == 40  # the first load reads everything

    new, secret = await store.create_key(t.id, name="new", actor="admin")
    assert await _reload(cache, store) == {"api_keys": 1}
    assert cache.keys.lookup(secret) == new

    await store.update_policy(t.id, pol.id, rules={"r": [2]}, actor="admin")
    assert await _reload(cache, store) == {"policies": 1}
    assert [p.rules for p in cache.snapshot.policies_for(t.id)] == [{"r": [2]}]

    before = cache.snapshot
    await store.revoke_key(t.id, new.id, actor="admin")
    assert await _reload(cache, store) == {}  # the one changed row is read, and is revoked: none kept
    assert cache.keys.lookup(secret) is None and len(cache.snapshot.keys) == 40
    # What did not change is the same object: the policy engine finds its policies unchanged at once.
    assert cache.snapshot.policies is before.policies and cache.snapshot.tenants is before.tenants

    ent = await store.grant_entitlement(
        t.id, model_group="m", starts_on=date(2025, 1, 1), ends_on=date(2025, 1, 31), actor="admin"
    )
    assert await _reload(cache, store) == {"entitlements": 1}
    await store.revoke_entitlement(t.id, ent.id, actor="admin")
    assert await _reload(cache, store) == {}
    assert cache.snapshot.entitlements == ()

    same = cache.snapshot
    assert await cache.refresh() is same  # nothing changed: nothing read, the same snapshot


async def test_a_deleted_tenant_leaves_every_replica_with_its_rows(store, store2):
    t, team, made, _ = await _tenant_with_rows(store, "gone")
    keep, _, kept, _ = await _tenant_with_rows(store, "kept")
    await store.create_budget(t.id, scope="team", scope_id=team.id, amount="5", actor="admin")
    cache = await _replica(store2)

    for record, _ in made:
        await store.revoke_key(t.id, record.id, actor="admin")
    await store.delete_team(t.id, team.id, actor="admin")  # its revoked keys detached, its budget gone
    assert await _reload(cache, store) == {}
    assert cache.snapshot.budgets == () and team.id not in cache.snapshot.teams
    await store.delete_tenant(t.id, actor="admin")  # ON DELETE CASCADE: every row of the tenant
    assert await _reload(cache, store) == {}  # every changed row is gone: none read
    assert list(cache.snapshot.tenants) == [keep.id]
    assert {k.tenant_id for k in cache.snapshot.keys.values()} == {keep.id}
    assert {p.tenant_id for p in cache.snapshot.policies} == {keep.id}


async def test_token_revocations_and_their_removal_reach_a_replica(store, store2):
    t = await store.create_tenant("t", actor="admin")
    cache = await _replica(store2)
    rev = await store.create_token_revocation(
        kind="jti", issuer="https://idp.example", jti="j1", tenant_id=t.id, reason="lost", actor="admin"
    )
    assert await _reload(cache, store) == {"token_revocations": 1}
    assert [r.id for r in cache.snapshot.revocations] == [rev.id]
    await store.delete_token_revocation(rev.id, actor="admin")
    assert await _reload(cache, store) == {}
    assert cache.snapshot.revocations == ()


async def test_an_unreadable_row_refuses_its_tenant_until_mended_on_a_replica(store, store2):
    t = await store.create_tenant("t", actor="admin")
    bud = await store.create_budget(t.id, scope="tenant", amount="5", actor="admin")
    cache = await _replica(store2)
    async with store.engine.begin() as conn:  # a hand edit: no version bump, found at the next reload
        await conn.execute(sa.update(budgets).values(amount="lots"))
    assert await _reload(cache, store) == {"budgets": 1}
    assert t.id in cache.snapshot.refused and cache.snapshot.budgets == ()

    await store.update_budget(t.id, bud.id, amount="7", actor="admin")
    assert await _reload(cache, store) == {"budgets": 1}
    assert cache.snapshot.refused == {} and [b.amount for b in cache.snapshot.budgets] == ["7"]


async def test_a_replica_that_missed_many_changes_catches_up_with_them_alone(store, store2):
    t, *_ = await _tenant_with_rows(store, "t")
    cache = await _replica(store2)
    made = [await store.create_key(t.id, name=f"n{i}", actor="admin") for i in range(30)]
    for record, _ in made[:10]:
        await store.revoke_key(t.id, record.id, actor="admin")
    assert await _reload(cache, store) == {"api_keys": 20}
    assert len(cache.snapshot.keys) == 25


async def test_a_replica_further_behind_than_the_changes_kept_reads_everything(store, store2, monkeypatch):
    monkeypatch.setattr(base, "CHANGES_KEPT", 4)
    monkeypatch.setattr(base, "CHANGES_PRUNE_EVERY", 2)
    t, *_ = await _tenant_with_rows(store, "t")
    cache = await _replica(store2)
    for i in range(8):
        await store.create_team(t.id, f"t{i}", actor="admin")
    async with store.engine.connect() as conn:
        kept_from = (await conn.execute(sa.select(state_version.c.changes_from))).scalar_one()
    assert kept_from > cache.snapshot.version + 1  # the changes it needs were pruned
    read = await _reload(cache, store)
    assert read["api_keys"] == 5 and read["teams"] == 9  # a whole read


async def test_a_console_session_end_expires_on_a_replica(store, store2):
    cache = await _replica(store2)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    await store.end_console_session("s" * 32, expires_at=soon, subject="u", tenant_id=None, actor="u")
    assert await _reload(cache, store) == {"console_session_ends": 1}
    assert len(cache.snapshot.session_ends) == 1
    later = datetime.now(UTC) + timedelta(hours=1)
    await store.end_console_session("t" * 32, expires_at=later, subject="u", tenant_id=None, actor="u")
    while datetime.now(UTC) <= soon:
        await cache.refresh()  # no wall-clock assertion: waits for the first to expire
    await _reload(cache, store)
    assert [e.session_id for e in cache.snapshot.session_ends] == ["t" * 32]


async def test_every_table_the_snapshot_holds_records_its_changes(store):
    """A migration that alters one of them on SQLite (batch mode: copy and move) drops its triggers: each
    must be made again, or a replica would never learn of that table's changes."""
    if store.engine.dialect.name == "sqlite":  # one trigger per event
        sql = "SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%\\_changed' ESCAPE '\\'"
    else:  # one trigger for the three events, one row per event
        sql = "SELECT event_object_table FROM information_schema.triggers WHERE trigger_name LIKE '%\\_changed'"
    async with store.engine.connect() as conn:
        found = [r[0] for r in (await conn.exec_driver_sql(sql)).all()]
    assert {t: found.count(t) for t in KINDS} == dict.fromkeys(KINDS, 3)


async def test_a_replica_reloading_among_concurrent_writers_ends_with_every_change(store, store2):
    """Writers take versions in commit order (the counter's row lock is held to the commit), so a reload
    between two of them never skips the other's rows for good."""
    tenants = [await store.create_tenant(f"t{i}", actor="admin") for i in range(8)]
    cache = await _replica(store2)
    writing = True

    async def reload_meanwhile() -> int:
        reloads = 0
        while writing:
            await cache.refresh()
            reloads += 1
            await asyncio.sleep(0)
        return reloads

    reloading = asyncio.create_task(reload_meanwhile())
    await asyncio.gather(*(store.create_key(t.id, name=f"k{i}", actor="admin") for i in range(5) for t in tenants))
    writing = False
    assert await reloading > 0
    await _reload(cache, store)  # what a whole read gives
    assert len(cache.snapshot.keys) == 40


async def test_a_table_with_more_changed_rows_than_it_held_is_read_whole(store, store2, monkeypatch):
    monkeypatch.setattr(snapshot_load, "MAX_IDS", 3)
    t, *_ = await _tenant_with_rows(store, "t", keys=10)
    cache = await _replica(store2)
    for i in range(5):  # more than MAX_IDS, fewer than the 10 held: only they are read
        await store.create_key(t.id, name=f"n{i}", actor="admin")
    assert await _reload(cache, store) == {"api_keys": 5}
    for i in range(20):  # more than the 15 held: the table is read whole
        await store.create_key(t.id, name=f"m{i}", actor="admin")
    assert await _reload(cache, store) == {"api_keys": 35}


async def test_a_row_the_driver_cannot_decode_is_reported_by_an_incremental_reload(store, store2, backend):
    if backend != "sqlite":
        pytest.skip("PostgreSQL's column types refuse the hand edit")
    t, _, made, _ = await _tenant_with_rows(store, "t")
    cache = await _replica(store2)
    (record, secret), (other, other_secret) = made[0], made[1]
    async with store.engine.begin() as conn:  # a timestamp that is not one: the driver's decoding raises
        await conn.execute(sa.update(api_keys).where(api_keys.c.id == record.id).values(created_at=sa.literal("soon")))
    assert await _reload(cache, store) == {"api_keys": 1}
    assert [u.id for u in cache.snapshot.unreadable] == [record.id] and cache.snapshot.refused == {}
    assert cache.keys.lookup(secret) is None and cache.keys.lookup(other_secret) == other
