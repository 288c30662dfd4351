from __future__ import annotations

import asyncio
import time
from datetime import date

import pytest

from multihome.storage import SnapshotCache
from polls import Polls  # tests/ is on sys.path (rootdir conftest)

pytestmark = pytest.mark.anyio


async def test_snapshot_holds_what_the_hot_path_needs(store):
    a = await store.create_tenant("a", actor="admin")
    team = await store.create_team(a.id, "ml", actor="admin")
    live, live_secret = await store.create_key(a.id, name="live", team_id=team.id, actor="admin")
    dead, _ = await store.create_key(a.id, name="dead", actor="admin")
    await store.revoke_key(a.id, dead.id, actor="admin")
    pol = await store.create_policy(a.id, scope="team", scope_id=team.id, rules={"r": 1}, actor="admin")
    ent = await store.grant_entitlement(
        a.id, model_group="m", starts_on=date(2025, 1, 1), ends_on=date(2025, 1, 31), actor="admin"
    )
    gone = await store.grant_entitlement(
        a.id, model_group="n", starts_on=date(2025, 1, 1), ends_on=date(2025, 1, 31), actor="admin"
    )
    await store.revoke_entitlement(a.id, gone.id, actor="admin")

    snap = await store.snapshot()
    assert snap.version == await store.version()
    assert list(snap.tenants) == [a.id] and list(snap.teams) == [team.id]
    assert snap.keys == {live.prefix: live}  # revoked keys are not in memory at all
    assert snap.policies == (pol,) and snap.entitlements == (ent,)
    assert ent.active_on(date(2025, 1, 31)) and not ent.active_on(date(2025, 2, 1))
    assert snap.key_index().lookup(live_secret) == live


async def test_revocation_on_one_replica_reaches_another_at_its_next_poll(store, store2):
    t = await store.create_tenant("t", actor="admin")
    key, secret = await store.create_key(t.id, name="k", actor="admin")
    polls = Polls(store2)
    cache = SnapshotCache(store2, interval_s=0.25)
    await cache.start()
    try:
        assert cache.keys.lookup(secret) == key

        await store.revoke_key(t.id, key.id, actor="admin")  # through the other replica
        polls.mark()
        deadline = time.monotonic() + 60
        while cache.keys.lookup(secret) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.keys.lookup(secret) is None, "revocation never reached the other replica"
        assert polls.since_mark() <= 1, f"revocation applied only by the {polls.since_mark()}th poll after it"

        # New keys appear the same way.
        new, new_secret = await store.create_key(t.id, name="k2", actor="admin")
        polls.mark()
        deadline = time.monotonic() + 60
        while cache.keys.lookup(new_secret) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.keys.lookup(new_secret) == new and polls.since_mark() <= 1
        assert cache.snapshot.version == await store.version()
    finally:
        await cache.stop()


async def test_cache_reloads_only_when_something_changed(store):
    cache = SnapshotCache(store, interval_s=0.02)
    await cache.start()
    try:
        await asyncio.sleep(0.3)
        assert cache.reloads == 1  # ~15 polls, nothing changed, no reload
        await store.create_tenant("t", actor="admin")
        deadline = time.monotonic() + 60
        while cache.reloads == 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.reloads == 2 and [x.name for x in cache.snapshot.tenants.values()] == ["t"]
    finally:
        await cache.stop()
    assert cache.poll_errors == 0


async def test_an_outage_of_many_polls_is_one_warning_then_one_line_when_it_ends(store, caplog):
    """Each poll meets the outage (every interval_s): one warning per poll buried the rest of the log."""
    real, refusals = store.version, [0]

    async def refused():
        if refusals[0] >= 100:
            return await real()
        refusals[0] += 1
        raise ConnectionRefusedError(111, "Connection refused")

    store.version = refused
    caplog.set_level("INFO", logger="multihome.storage")
    cache = SnapshotCache(store, interval_s=0.001)
    await cache.start()
    try:
        deadline = time.monotonic() + 60
        while "snapshot polled again" not in caplog.text and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await cache.stop()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "snapshot poll" in r.getMessage()]
    assert cache.poll_errors == 100
    assert 2 <= len(lines) <= 3 and lines[0][0] == "WARNING" and lines[-1][0] == "INFO", lines
    assert "ConnectionRefusedError" in lines[0][1] and "100 failures" in lines[-1][1], lines


async def test_cache_keeps_serving_when_the_database_goes_away(tmp_path):
    from multihome.storage import open_store

    db = tmp_path / "x.db"
    store = await open_store(str(db), migrate=True)
    t = await store.create_tenant("t", actor="admin")
    key, secret = await store.create_key(t.id, name="k", actor="admin")
    cache = SnapshotCache(store, interval_s=0.02)
    await cache.start()
    try:
        # The file goes first: a poll between a close and the rename could reopen the old file and
        # keep reading it through the rename. After the close every poll opens a path with no database.
        db.rename(tmp_path / "moved.db")
        (tmp_path / "x.db-wal").unlink(missing_ok=True)
        await store.close()
        deadline = time.monotonic() + 60
        while cache.poll_errors == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.poll_errors > 0
        assert cache.keys.lookup(secret) == key  # last good snapshot still serves
    finally:
        await cache.stop()
        await store.close()
