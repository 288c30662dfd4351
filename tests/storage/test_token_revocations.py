"""Token revocations in the store, on SQLite and PostgreSQL: defaults, validation that names the
field, tenant scoping, exactly one version bump and one admin event per change, only live rows in
the snapshot, and propagation to another replica's snapshot cache."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from multihome.storage import Invalid, NotFound, SnapshotCache
from multihome.storage.tables import token_revocations
from polls import Polls  # tests/ is on sys.path (rootdir conftest)

pytestmark = pytest.mark.anyio
ISS = "https://idp.example.com/realms/acme"


async def test_create_list_get_delete_bump_the_version_once_each_and_are_recorded(store):
    t = await store.create_tenant("t", actor="admin")
    v = await store.version()
    before = datetime.now(UTC)
    one = await store.create_token_revocation(
        kind="jti",
        issuer=ISS,
        jti="j-1",
        reason="leaked in a ticket",
        actor="sec@example.com",
        max_token_lifetime_s=3600,
    )
    after = datetime.now(UTC)
    assert await store.version() == v + 1
    assert one.id.startswith("rev_") and (one.kind, one.issuer, one.jti, one.subject) == ("jti", ISS, "j-1", None)
    assert one.tenant_id is None and one.not_before is None and one.actor == "sec@example.com"
    # No exp given: kept for the issuer's maximum token lifetime.
    assert before + timedelta(hours=1) <= one.expires_at <= after + timedelta(hours=1)

    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    two = await store.create_token_revocation(
        kind="jti", issuer=ISS, jti="j-2", expires_at=exp, tenant_id=t.id, actor="sec"
    )
    assert two.expires_at == exp and two.tenant_id == t.id
    sub = await store.create_token_revocation(kind="subject", issuer=ISS, subject="alice", tenant_id=t.id, actor="sec")
    assert sub.expires_at is None and before <= sub.not_before <= datetime.now(UTC)  # default cut-off: now
    cut = datetime(2030, 1, 1, tzinfo=UTC)
    sub2 = await store.create_token_revocation(
        kind="subject", issuer=ISS, subject="bob", not_before=cut, expires_at=cut + timedelta(days=1), actor="sec"
    )
    assert await store.version() == v + 4

    assert await store.page_token_revocations(None, 1000) == [one, two, sub, sub2]
    assert await store.page_token_revocations(t.id, 1000) == [two, sub]  # a tenant's own; org-wide rows are not
    assert await store.page_token_revocations(None, 1000, kind="subject") == [sub, sub2]
    assert await store.page_token_revocations(None, 1000, issuer=ISS, subject="bob") == [sub2]
    assert await store.page_token_revocations(None, 1000, issuer="https://other") == []
    assert await store.get_token_revocation(sub2.id) == sub2
    assert await store.get_token_revocation(two.id, tenant_id=t.id) == two
    with pytest.raises(NotFound):
        await store.get_token_revocation(one.id, tenant_id=t.id)  # org-wide: not the tenant's to see

    assert await store.delete_token_revocation(two.id, tenant_id=t.id, actor="tadmin") == two
    assert await store.version() == v + 5
    with pytest.raises(NotFound):
        await store.get_token_revocation(two.id)
    events = [(e.action, e.actor, e.tenant_id, e.object_id) for e in (await store.admin_events())[-5:]]
    assert events == [
        ("token_revocation.create", "sec@example.com", None, one.id),
        ("token_revocation.create", "sec", t.id, two.id),
        ("token_revocation.create", "sec", t.id, sub.id),
        ("token_revocation.create", "sec", None, sub2.id),
        ("token_revocation.delete", "tadmin", t.id, two.id),
    ]
    created = (await store.admin_events())[-5]
    assert created.detail == {
        "kind": "jti",
        "issuer": ISS,
        "subject": None,
        "jti": "j-1",
        "not_before": None,
        "expires_at": one.expires_at.isoformat(),
        "reason": "leaked in a ticket",
    }


@pytest.mark.parametrize(
    "args,field,message",
    [
        ({"kind": "token"}, "kind", "jti, subject"),
        ({"kind": "jti"}, "jti", "jti is required"),
        ({"kind": "jti", "jti": "  "}, "jti", "non-empty"),
        ({"kind": "jti", "jti": "x" * 401}, "jti", "longer than 400"),
        ({"kind": "subject"}, "subject", "subject is required"),
        ({"kind": "subject", "subject": "a", "issuer": ""}, "issuer", "non-empty"),
        ({"kind": "subject", "subject": "a", "issuer": "x" * 1001}, "issuer", "longer than 1000"),
        ({"kind": "jti", "jti": "j", "subject": "a"}, "subject", "kind subject"),
        ({"kind": "subject", "subject": "a", "jti": "j"}, "jti", "kind jti"),
        ({"kind": "jti", "jti": "j", "not_before": datetime(2030, 1, 1, tzinfo=UTC)}, "not_before", "kind subject"),
        ({"kind": "subject", "subject": "a", "not_before": datetime(2030, 1, 1)}, "not_before", "timezone-aware"),
        ({"kind": "jti", "jti": "j", "expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at", "already"),
        ({"kind": "subject", "subject": "a", "expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at", "past"),
        ({"kind": "jti", "jti": "j", "reason": "r" * 1001}, "reason", "longer than 1000"),
        ({"kind": "jti", "jti": "j", "reason": "leaked\r\nX-Injected: 1"}, "reason", "control character"),
        ({"kind": "subject", "subject": "alice\u0000"}, "subject", "control character"),
        (
            {
                "kind": "subject",
                "subject": "a",
                "not_before": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
            },
            "not_before",
            "to 9998-12-31",
        ),
        (
            {"kind": "subject", "subject": "a", "expires_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
            "expires_at",
            "from 1970-01-01",
        ),
    ],
)
async def test_bad_values_name_the_field_and_leave_nothing_behind(store, args, field, message):
    v = await store.version()
    with pytest.raises(Invalid, match=message) as info:
        await store.create_token_revocation(**{"issuer": ISS, **args}, actor="admin")
    assert info.value.field == field
    assert await store.version() == v and await store.page_token_revocations(None, 1000) == []


async def test_unknown_tenant_and_ids_are_not_found_and_tenants_cannot_touch_each_others_rows(store):
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    with pytest.raises(NotFound, match="tenant"):
        await store.create_token_revocation(kind="jti", issuer=ISS, jti="j", tenant_id="ten_missing", actor="admin")
    of_b = await store.create_token_revocation(kind="subject", issuer=ISS, subject="s", tenant_id=b.id, actor="admin")
    org = await store.create_token_revocation(kind="subject", issuer=ISS, subject="s", actor="admin")
    v = await store.version()
    for rid in (of_b.id, org.id, "rev_unknown"):
        with pytest.raises(NotFound):
            await store.delete_token_revocation(rid, tenant_id=a.id, actor="admin")
    assert await store.version() == v and await store.page_token_revocations(None, 1000) == [of_b, org]
    # Deleting a tenant deletes its revocations; org-wide ones stay.
    await store.delete_tenant(b.id, actor="admin")
    assert await store.page_token_revocations(None, 1000) == [org]


async def test_the_database_refuses_a_row_that_mixes_the_kinds(store):
    now = datetime.now(UTC)
    row = {
        "id": "rev_x",
        "tenant_id": None,
        "kind": "jti",
        "issuer": ISS,
        "subject": "s",
        "jti": None,
        "not_before": None,
        "expires_at": None,
        "reason": "",
        "actor": "a",
        "created_at": now,
    }
    async with store.engine.begin() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await conn.execute(sa.insert(token_revocations).values(**row))


async def test_snapshot_holds_only_live_revocations_indexed_by_issuer_and_jti_or_subject(store):
    t = await store.create_tenant("t", actor="admin")
    j = await store.create_token_revocation(kind="jti", issuer=ISS, jti="j-1", actor="admin")
    cut = datetime.now(UTC)
    s = await store.create_token_revocation(
        kind="subject", issuer=ISS, subject="alice", tenant_id=t.id, not_before=cut, actor="admin"
    )
    gone = await store.create_token_revocation(kind="jti", issuer=ISS, jti="j-old", actor="admin")
    async with store.engine.begin() as conn:  # as if its time had come (creating one in the past is refused)
        await conn.execute(
            sa.update(token_revocations)
            .where(token_revocations.c.id == gone.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    snap = await store.snapshot()
    assert snap.revocations == (j, s)
    assert [r.id for r in await store.page_token_revocations(None, 1000, live_only=True)] == [j.id, s.id]
    index = snap.revocation_index()
    assert len(index) == 2
    assert index.match(ISS, "j-1", "anyone", 0, "any-tenant") == j
    assert index.match(ISS, "j-old", "anyone", 0, "any-tenant") is None
    assert index.match("https://other", "j-1", "anyone", 0, "any-tenant") is None
    issued_before = cut.timestamp() - 1
    assert index.match(ISS, None, "alice", issued_before, t.id) == s
    assert index.match(ISS, None, "alice", issued_before, "ten_other") is None  # scoped to tenant t
    assert index.match(ISS, None, "alice", cut.timestamp() + 1, t.id) is None  # issued after the cut-off


async def test_revocations_reach_another_replicas_snapshot_at_its_next_poll(store, store2):
    polls = Polls(store2)
    cache = SnapshotCache(store2, interval_s=0.25)
    await cache.start()
    try:
        assert len(cache.revocations) == 0
        took = []
        for i in range(5):
            made = await store.create_token_revocation(kind="jti", issuer=ISS, jti=f"j-{i}", actor="admin")
            polls.mark()
            start = time.monotonic()
            while cache.revocations.match(ISS, f"j-{i}", "u", 0, "t") is None and time.monotonic() - start < 60:
                await asyncio.sleep(0.01)
            took.append(polls.since_mark())
            assert cache.revocations.match(ISS, f"j-{i}", "u", 0, "t") == made, "never reached the other replica"
        assert max(took) <= 1, f"polls after each commit until it applied: {took}"

        await store.delete_token_revocation(made.id, actor="admin")
        polls.mark()
        start = time.monotonic()
        while cache.revocations.match(ISS, "j-4", "u", 0, "t") is not None and time.monotonic() - start < 60:
            await asyncio.sleep(0.01)
        assert cache.revocations.match(ISS, "j-4", "u", 0, "t") is None and polls.since_mark() <= 1
        assert len(cache.revocations) == 4 and cache.snapshot.version == await store.version()
    finally:
        await cache.stop()


async def test_a_tenant_holds_at_most_max_revocations(store, monkeypatch):
    """Every replica holds every live revocation (RevocationIndex), and a subject's may never expire: a tenant
    admin naming a new jti or subject each time grew them all for good. Expired rows and other tenants' are not
    counted; org-wide ones (no tenant: an org-admin's) are not held to it."""
    from multihome.storage import revocations

    monkeypatch.setattr(revocations, "MAX_REVOCATIONS_PER_TENANT", 3, raising=False)
    t = await store.create_tenant("t", actor="admin")
    other = await store.create_tenant("u", actor="admin")
    made = [
        await store.create_token_revocation(kind="subject", issuer=ISS, subject=f"s-{i}", tenant_id=t.id, actor="ta")
        for i in range(3)
    ]
    for kind, name in (("subject", {"subject": "s-3"}), ("jti", {"jti": "j-3"})):
        with pytest.raises(Invalid, match="the most a tenant may hold"):
            await store.create_token_revocation(kind=kind, issuer=ISS, tenant_id=t.id, actor="ta", **name)
    assert len(await store.page_token_revocations(t.id, 1000)) == 3
    await store.create_token_revocation(kind="subject", issuer=ISS, subject="s-3", tenant_id=other.id, actor="ta")
    await store.create_token_revocation(kind="subject", issuer=ISS, subject="s-3", actor="org")  # org-wide
    # a row past its expiry is not held: it refuses nothing and leaves the snapshot
    async with store.engine.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(
            sa.update(token_revocations).where(token_revocations.c.id == made[0].id).values(expires_at=past)
        )
    await store.create_token_revocation(kind="subject", issuer=ISS, subject="s-4", tenant_id=t.id, actor="ta")
    await store.delete_token_revocation(made[1].id, actor="ta")
    await store.create_token_revocation(kind="jti", issuer=ISS, jti="j-4", tenant_id=t.id, actor="ta")


async def test_a_tenant_keeps_at_most_max_expired_revocations(store, monkeypatch):
    """The cap counts live revocations only and expired ones stay listed: a tenant admin revoking jti after jti,
    each expiring a second later, grew the table and its list without bound. Its next revocation deletes its
    oldest expired ones past MAX_EXPIRED_PER_TENANT; live ones, other tenants' and org-wide ones stay."""
    from multihome.storage import revocations

    monkeypatch.setattr(revocations, "MAX_EXPIRED_PER_TENANT", 2, raising=False)
    t = await store.create_tenant("t", actor="admin")
    other = await store.create_tenant("u", actor="admin")

    async def expired(tenant_id: str | None, n: int) -> list[str]:
        made = [
            (
                await store.create_token_revocation(
                    kind="jti", issuer=ISS, jti=f"j-{n}-{i}", tenant_id=tenant_id, actor="a"
                )
            ).id
            for i in range(n)
        ]
        async with store.engine.begin() as conn:
            for i, rid in enumerate(made):  # expired, the first made the longest ago
                past = datetime.now(UTC) - timedelta(minutes=n - i)
                await conn.execute(
                    sa.update(token_revocations).where(token_revocations.c.id == rid).values(expires_at=past)
                )
        return made

    mine, theirs, org = await expired(t.id, 5), await expired(other.id, 4), await expired(None, 3)
    live = await store.create_token_revocation(kind="subject", issuer=ISS, subject="s", tenant_id=t.id, actor="a")
    kept = [r.id for r in await store.page_token_revocations(t.id, 1000)]
    assert kept == [*mine[-2:], live.id]  # the newest two expired, and the live one
    assert [r.id for r in await store.page_token_revocations(other.id, 1000)] == theirs
    everyone = {r.id for r in await store.page_token_revocations(None, 1000)}
    assert everyone == {*mine[-2:], live.id, *theirs, *org}  # org-wide expired ones are an org-admin's to delete


async def test_a_live_list_goes_on_past_a_page_whose_last_row_expired_since(store):
    """`?live=true` read a page at a time: the page's last row expiring before the next page is asked for (its
    id the cursor) does not end the walk with a 400; the next page starts after it. Another tenant's row, expired
    or not, is a place in a tenant's list by its time (made after this tenant's: none after it)."""
    t = await store.create_tenant("t", actor="admin")
    other = await store.create_tenant("o", actor="admin")
    made = [
        await store.create_token_revocation(kind="jti", issuer=ISS, jti=f"j-{i}", tenant_id=t.id, actor="admin")
        for i in range(3)
    ]
    theirs = await store.create_token_revocation(kind="jti", issuer=ISS, jti="j-o", tenant_id=other.id, actor="a")
    first = await store.page_token_revocations(t.id, 1, live_only=True)
    assert [r.id for r in first] == [made[0].id] and first.more
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with store.engine.begin() as conn:  # as if their time had come (creating one in the past is refused)
        expire = sa.update(token_revocations).values(expires_at=past)
        await conn.execute(expire.where(token_revocations.c.id.in_([first.last, theirs.id])))
    rest = await store.page_token_revocations(t.id, 10, first.last, live_only=True)
    assert [r.id for r in rest] == [made[1].id, made[2].id] and not rest.more
    assert list(await store.page_token_revocations(t.id, 10, theirs.id, live_only=True)) == []
