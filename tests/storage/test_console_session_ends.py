"""Console session ends in the store, on SQLite and PostgreSQL: a logout by session id, a cut-off by subject
(of one issuer) or for everyone, one version bump and one admin event each, only live rows in the snapshot,
pruning once a row's expiry has passed, and propagation to another replica's snapshot cache at its next
poll; a tenant-admin's cut-off ends no org-admin's or auditor's session."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from multihome.storage import Invalid, SnapshotCache
from multihome.storage.console_sessions import API_KEY_ISSUER, SessionEndIndex
from multihome.storage.tables import console_session_ends
from polls import Polls  # tests/ is on sys.path (rootdir conftest)

pytestmark = pytest.mark.anyio
TTL = 8 * 3600.0
A, B = "https://a.example/realms/corp", "https://b.example/realms/corp"  # two OIDC issuers' iss


async def test_a_logout_is_stored_once_by_session_id_and_ends_only_that_session(store):
    v = await store.version()
    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    row = await store.end_console_session("sid-1", expires_at=exp, subject="key_a", tenant_id="ten_a", actor="key_a")
    assert await store.version() == v + 1
    assert row.id.startswith("cse_") and (row.kind, row.session_id, row.expires_at) == ("session", "sid-1", exp)
    again = await store.end_console_session("sid-1", expires_at=exp, subject="key_a", tenant_id="ten_a", actor="key_a")
    assert again.id == row.id and await store.version() == v + 1  # a second logout of it changes nothing
    events = await store.admin_events()
    assert [e.action for e in events][-1] == "console_session.logout"
    assert "sid-1" not in str(events[-1].detail)

    index = SessionEndIndex((await store.snapshot()).session_ends)
    now = time.time()
    assert index.ended("sid-1", "key_a", "ten_a", issued=now - 60)
    assert not index.ended("sid-2", "key_a", "ten_a", issued=now - 60)  # another session of the same key


async def test_a_cut_off_ends_sessions_issued_up_to_it_of_its_subject_and_tenant(store):
    cut = datetime.now(UTC).replace(microsecond=0)
    by_subject = await store.end_console_sessions(subject="alice", issuer=A, tenant_id="ten_a", ttl_s=TTL, actor="org")
    assert by_subject.kind == "subject" and by_subject.not_before is not None
    assert cut <= by_subject.not_before and by_subject.expires_at == by_subject.not_before + timedelta(seconds=TTL)
    everyone = await store.end_console_sessions(not_before=cut - timedelta(hours=1), ttl_s=TTL, actor="org")
    assert everyone.kind == "all" and everyone.subject is None
    index = SessionEndIndex((await store.snapshot()).session_ends)
    before, after = by_subject.not_before.timestamp() - 5, time.time() + 5
    assert index.ended("s1", "alice", "ten_a", issued=before, issuer=A)
    assert not index.ended("s1", "alice", "ten_a", issued=after, issuer=A)  # signed in again since: let in
    assert not index.ended("s1", "alice", "ten_b", issued=before, issuer=A)  # another tenant's alice
    assert not index.ended("s1", "alice", "ten_a", issued=before, issuer=B)  # another issuer's alice
    assert not index.ended("s1", "bob", "ten_a", issued=before, issuer=A)  # issued after the org-wide cut-off
    assert index.ended("s1", "bob", "ten_a", issued=cut.timestamp() - 7200, issuer=A)  # before it

    with pytest.raises(Invalid):  # everything issued by then has expired by itself
        await store.end_console_sessions(not_before=cut - timedelta(seconds=TTL + 60), ttl_s=TTL, actor="org")
    with pytest.raises(Invalid):
        await store.end_console_sessions(subject="", issuer=A, ttl_s=TTL, actor="org")
    with pytest.raises(Invalid) as no_issuer:  # "alice" of which issuer?
        await store.end_console_sessions(subject="alice", ttl_s=TTL, actor="org")
    assert no_issuer.value.field == "issuer"
    # A cut-off in the future would refuse everyone who signs in again until then (2027 for 2026: a year, and
    # no route deletes one); a clock a little ahead is let through.
    with pytest.raises(Invalid) as future:
        await store.end_console_sessions(not_before=cut + timedelta(days=365), ttl_s=TTL, actor="org")
    assert future.value.field == "not_before"
    ahead = await store.end_console_sessions(
        subject="carol", issuer=A, not_before=cut + timedelta(seconds=30), ttl_s=TTL, actor="org"
    )
    listed = await store.page_console_session_ends(1000)
    assert [r.id for r in listed] == [by_subject.id, everyone.id, ahead.id]
    assert [r.id for r in await store.page_console_session_ends(1000, tenant_id="ten_a")] == [by_subject.id]


async def test_rows_past_their_expiry_leave_the_snapshot_and_are_pruned_by_the_next_write(store):
    soon = datetime.now(UTC) + timedelta(seconds=2)
    await store.end_console_session("old", expires_at=soon, subject="k", tenant_id="t", actor="k")
    assert [e.session_id for e in (await store.snapshot()).session_ends] == ["old"]
    deadline = time.monotonic() + 60
    while (await store.snapshot()).session_ends and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert (await store.snapshot()).session_ends == ()  # expired: not loaded
    await store.end_console_session(
        "new", expires_at=datetime.now(UTC) + timedelta(hours=1), subject="k", tenant_id="t", actor="k"
    )
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.select(console_session_ends.c.session_id))).scalars().all()
    assert stored == ["new"]  # the expired row is gone from the table, not only from the snapshot


async def test_a_logout_on_one_replica_reaches_another_at_its_next_poll(store, store2):
    polls = Polls(store2)
    cache = SnapshotCache(store2, interval_s=0.25)
    await cache.start()
    try:
        issued = time.time()
        assert not cache.session_ends.ended("sid-x", "key_a", "ten_a", issued)
        exp = datetime.now(UTC) + timedelta(hours=1)
        await store.end_console_session("sid-x", expires_at=exp, subject="key_a", tenant_id="ten_a", actor="key_a")
        polls.mark()
        deadline = time.monotonic() + 60
        while not cache.session_ends.ended("sid-x", "key_a", "ten_a", issued) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.session_ends.ended("sid-x", "key_a", "ten_a", issued), "the logout never reached the replica"
        assert polls.since_mark() <= 1, f"applied only by the {polls.since_mark()}th poll after the logout"

        await store.end_console_sessions(subject="alice", issuer=A, ttl_s=TTL, actor="org")
        polls.mark()
        deadline = time.monotonic() + 60
        while not cache.session_ends.ended("s", "alice", "ten_a", issued, issuer=A) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.session_ends.ended("s", "alice", "ten_a", issued, issuer=A) and polls.since_mark() <= 1
    finally:
        await cache.stop()


async def test_logouts_of_one_session_at_once_on_two_replicas_store_one_row_and_both_succeed(store, store2):
    # Two tabs of one browser, or a double click, on two replicas: on PostgreSQL both transactions read no
    # row for the id, and the second insert was a unique violation (a Conflict: a logout said not stored).
    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    for n in range(5):
        sid = f"twice-{n}"
        rows = await asyncio.gather(
            *(
                s.end_console_session(sid, expires_at=exp, subject="key_a", tenant_id="ten_a", actor="key_a")
                for s in (store, store2, store, store2)
            )
        )
        assert len({r.id for r in rows}) == 1, rows
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.select(console_session_ends.c.session_id))).scalars().all()
    assert sorted(stored) == [f"twice-{n}" for n in range(5)]


async def test_a_subjects_cut_off_names_its_issuer_and_a_keys_is_its_own_id(store):
    """Before: "alice" of issuer A and "alice" of issuer B (or an API key whose id a token's subject repeats)
    were ended by one cut-off."""
    a = await store.end_console_sessions(subject="alice", issuer=A, ttl_s=TTL, actor="org")
    key = await store.end_console_sessions(subject="key_x", issuer=API_KEY_ISSUER, ttl_s=TTL, actor="org")
    assert (a.issuer, a.set_by_role, key.issuer) == (A, "org-admin", API_KEY_ISSUER)
    index = SessionEndIndex((await store.snapshot()).session_ends)
    issued = a.not_before.timestamp() - 5
    assert index.ended("s", "alice", "ten_a", issued, issuer=A)
    assert not index.ended("s", "alice", "ten_a", issued, issuer=B)
    assert index.ended("s", "key_x", "ten_a", issued, issuer=API_KEY_ISSUER)
    assert not index.ended("s", "key_x", "ten_a", issued, issuer=A)  # a token whose subject is "key_x"
    detail = next(e.detail for e in await store.admin_events() if e.object_id == a.id)
    assert (detail["issuer"], detail["subject"], detail["set_by_role"]) == (A, "alice", "org-admin")


async def test_a_tenant_admins_cut_off_ends_no_org_admins_or_auditors_session(store):
    cut = await store.end_console_sessions(
        subject="alice", issuer=A, tenant_id="ten_a", ttl_s=TTL, actor="key_ta", role="tenant-admin"
    )
    assert cut.set_by_role == "tenant-admin"
    index = SessionEndIndex((await store.snapshot()).session_ends)
    issued = cut.not_before.timestamp() - 5
    assert index.ended("s", "alice", "ten_a", issued, issuer=A, roles=frozenset({"tenant-admin"}))
    for held in ({"org-admin"}, {"auditor"}, {"tenant-admin", "auditor"}):
        assert not index.ended("s", "alice", "ten_a", issued, issuer=A, roles=frozenset(held)), held
    with pytest.raises(Invalid):
        await store.end_console_sessions(subject="alice", issuer=A, ttl_s=TTL, actor="x", role="member")


async def test_a_tenant_has_at_most_max_cutoffs_in_force(store, monkeypatch):
    """Every replica holds every cut-off in force (SessionEndIndex) for the session TTL: a tenant admin naming
    a new subject each time grew them all. Expired rows, logouts, other tenants' and org-wide cut-offs are
    not counted."""
    from multihome.storage import console_sessions

    monkeypatch.setattr(console_sessions, "MAX_CUTOFFS_PER_TENANT", 3, raising=False)
    made = [
        await store.end_console_sessions(subject=f"s-{i}", issuer=A, tenant_id="ten_a", ttl_s=TTL, actor="ta")
        for i in range(3)
    ]
    with pytest.raises(Invalid, match="the most a tenant may hold"):
        await store.end_console_sessions(subject="s-3", issuer=A, tenant_id="ten_a", ttl_s=TTL, actor="ta")
    exp = datetime.now(UTC) + timedelta(hours=2)
    await store.end_console_session("sid-9", expires_at=exp, subject="s-9", tenant_id="ten_a", actor="s-9")
    await store.end_console_sessions(subject="s-3", issuer=A, tenant_id="ten_b", ttl_s=TTL, actor="ta")
    await store.end_console_sessions(subject="s-3", issuer=A, ttl_s=TTL, actor="org")  # org-wide
    async with store.engine.begin() as conn:  # one expires: it ends nothing any more, and is not held
        past = datetime.now(UTC) - timedelta(seconds=1)
        t = console_session_ends.c
        await conn.execute(sa.update(console_session_ends).where(t.id == made[0].id).values(expires_at=past))
    await store.end_console_sessions(subject="s-3", issuer=A, tenant_id="ten_a", ttl_s=TTL, actor="ta")


async def test_the_live_list_goes_on_past_a_page_whose_last_row_expired_since(store):
    """Read a page at a time (live rows, the default): the page's last row expiring before the next page is asked
    for does not end the walk with a 400; another tenant's row is a place in a tenant's list by its time (made
    after this tenant's: none after it), nothing of that tenant shown."""
    made = [
        await store.end_console_sessions(subject=f"s-{i}", issuer=A, tenant_id="ten_a", ttl_s=TTL, actor="ta")
        for i in range(3)
    ]
    theirs = await store.end_console_sessions(subject="s-b", issuer=A, tenant_id="ten_b", ttl_s=TTL, actor="tb")
    first = await store.page_console_session_ends(1, tenant_id="ten_a")
    assert [r.id for r in first] == [made[0].id] and first.more
    async with store.engine.begin() as conn:
        past, t = datetime.now(UTC) - timedelta(seconds=1), console_session_ends.c
        await conn.execute(sa.update(console_session_ends).where(t.id == first.last).values(expires_at=past))
    rest = await store.page_console_session_ends(10, first.last, tenant_id="ten_a")
    assert [r.id for r in rest] == [made[1].id, made[2].id] and not rest.more
    assert list(await store.page_console_session_ends(10, theirs.id, tenant_id="ten_a")) == []
