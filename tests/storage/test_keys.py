from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from multihome.storage import Invalid, KeyIndex, NotFound
from multihome.storage.tables import metadata

pytestmark = pytest.mark.anyio

KEY_RE = re.compile(r"^mh_[a-z0-9]{8}_[0-9A-Za-z]{43}$")


async def _tenant(store, name="acme"):
    return await store.create_tenant(name, actor="admin")


async def test_key_secret_is_returned_once_and_only_its_hash_is_stored(store):
    t = await _tenant(store)
    team = await store.create_team(t.id, "ml", actor="admin")
    record, secret = await store.create_key(
        t.id,
        name="ci",
        team_id=team.id,
        roles=["member", "auditor"],
        scopes_models=["gpt-4o", "claude"],
        scopes_endpoints=["chat"],
        metadata={"owner": "bob"},
        actor="admin",
    )
    assert KEY_RE.match(secret), secret
    assert record.id.startswith("key_") and secret.startswith(f"mh_{record.prefix}_")
    assert record.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert record.roles == ("auditor", "member")
    assert record.scopes_models == ("claude", "gpt-4o") and record.scopes_endpoints == ("chat",)
    assert await store.get_key(t.id, record.id) == record

    # The secret (and its random part) appears nowhere in the database.
    random_part = secret.split("_", 2)[2]
    async with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(sa.select(table))).all():
                text = repr(tuple(row))
                assert random_part not in text, f"secret stored in {table.name}"
    events = await store.admin_events(t.id)
    assert events[-1].action == "key.create" and random_part not in repr(events[-1])


async def test_key_index_accepts_only_the_exact_live_key(store):
    t = await _tenant(store)
    record, secret = await store.create_key(t.id, name="k", actor="admin")
    index = (await store.snapshot()).key_index()
    assert index.lookup(secret) == record
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert index.lookup(tampered) is None  # right prefix, wrong secret
    assert index.lookup(secret + "x") is None
    for junk in ["", "mh_", "sk-whatever", f"mh_{record.prefix}", "mh_nosuchpfx_" + "a" * 43, secret.upper()]:
        assert index.lookup(junk) is None, junk


async def test_expired_and_revoked_keys_are_rejected(store):
    t = await _tenant(store)
    soon = datetime.now(UTC) + timedelta(hours=1)
    expiring, s1 = await store.create_key(t.id, name="temp", expires_at=soon, actor="admin")
    doomed, s2 = await store.create_key(t.id, name="doomed", actor="admin")
    index = (await store.snapshot()).key_index()
    assert index.lookup(s1) == expiring
    assert index.lookup(s1, now=soon + timedelta(seconds=1)) is None
    assert index.lookup(s2) == doomed
    # By id (queued work holds its key's id, never the secret): the same verdicts.
    assert index.by_id(expiring.id) == expiring and index.by_id(doomed.id) == doomed
    assert index.by_id(expiring.id, now=soon + timedelta(seconds=1)) is None
    assert index.by_id("key_missing") is None

    revoked = await store.revoke_key(t.id, doomed.id, actor="admin")
    assert revoked.revoked_at is not None
    assert (await store.snapshot()).key_index().lookup(s2) is None
    assert (await store.snapshot()).key_index().by_id(doomed.id) is None
    again = await store.revoke_key(t.id, doomed.id, actor="admin")  # idempotent: no new event
    assert again.revoked_at == revoked.revoked_at
    assert [e.action for e in await store.admin_events(t.id)].count("key.revoke") == 1
    listed = await store.page_keys(t.id, 1000)
    assert [k.id for k in listed if k.revoked_at is None] == [expiring.id]
    assert {k.id for k in listed} == {expiring.id, doomed.id}


async def test_bad_key_requests_are_refused(store):
    a = await _tenant(store, "a")
    b = await _tenant(store, "b")
    team_b = await store.create_team(b.id, "ml", actor="admin")
    with pytest.raises(NotFound):
        await store.create_key(a.id, name="k", team_id=team_b.id, actor="admin")  # other tenant's team
    with pytest.raises(Invalid, match="unknown role"):
        await store.create_key(a.id, name="k", roles=["superuser"], actor="admin")
    with pytest.raises(Invalid):
        await store.create_key(a.id, name="k", roles=[], actor="admin")
    with pytest.raises(Invalid, match="timezone"):
        await store.create_key(a.id, name="k", expires_at=datetime(2030, 1, 1), actor="admin")
    with pytest.raises(Invalid):
        await store.create_key(a.id, name="k", scopes_models="gpt-4o", actor="admin")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await store.create_key("ten_missing", name="k", actor="admin")
    assert await store.page_keys(a.id, 1000) == [] and await store.version() == 3


async def test_tenant_b_never_sees_tenant_a_keys(store):
    a = await _tenant(store, "a")
    b = await _tenant(store, "b")
    key_a, _ = await store.create_key(a.id, name="shared-name", actor="admin")
    key_b, _ = await store.create_key(b.id, name="shared-name", actor="admin")
    assert [k.id for k in await store.page_keys(a.id, 1000)] == [key_a.id]
    assert [k.id for k in await store.page_keys(b.id, 1000)] == [key_b.id]
    with pytest.raises(NotFound):
        await store.get_key(b.id, key_a.id)
    with pytest.raises(NotFound):
        await store.revoke_key(b.id, key_a.id, actor="tenant-b-admin")
    assert (await store.get_key(a.id, key_a.id)).revoked_at is None


async def test_many_keys_have_distinct_prefixes(store):
    t = await _tenant(store)
    made = [await store.create_key(t.id, name=f"k{i}", actor="admin") for i in range(50)]
    assert len({r.prefix for r, _ in made}) == 50
    index = (await store.snapshot()).key_index()
    assert len(index) == 50
    assert all(index.lookup(s) == r for r, s in made)


def test_key_index_is_pure_memory():
    assert KeyIndex({}).lookup("mh_abcdefgh_" + "x" * 43) is None


async def test_a_tenant_holds_at_most_max_keys_not_revoked(store, monkeypatch):
    """Every replica holds every key not revoked (the snapshot): a tenant admin making one after another grew
    them all for good. Revoked keys and other tenants' are not counted."""
    from multihome.storage import apikeys

    monkeypatch.setattr(apikeys, "MAX_KEYS_PER_TENANT", 3, raising=False)
    t, other = await _tenant(store), await _tenant(store, "globex")
    made = [(await store.create_key(t.id, name=f"k{i}", actor="ta"))[0] for i in range(3)]
    with pytest.raises(Invalid, match="the most a tenant may hold"):
        await store.create_key(t.id, name="k3", actor="ta")
    await store.create_key(other.id, name="k3", actor="ta")
    await store.revoke_key(t.id, made[0].id, actor="ta")
    await store.create_key(t.id, name="k3", actor="ta")
    assert len([k for k in await store.page_keys(t.id, 1000) if k.revoked_at is None]) == 3
