from __future__ import annotations

import pytest

from multihome.storage import Conflict, Invalid, NotFound

pytestmark = pytest.mark.anyio


async def test_tenants_create_get_list_delete(store):
    acme = await store.create_tenant("acme", metadata={"cost_center": "42"}, actor="admin@org")
    beta = await store.create_tenant("beta", actor="admin@org")
    assert acme.id.startswith("ten_") and acme.id != beta.id
    got = await store.get_tenant(acme.id)
    assert got == acme and got.metadata == {"cost_center": "42"}
    assert (await store.get_tenant_by_name("beta")).id == beta.id
    assert [t.name for t in await store.list_tenants()] == ["acme", "beta"]

    await store.delete_tenant(beta.id, actor="admin@org")
    assert [t.name for t in await store.list_tenants()] == ["acme"]
    with pytest.raises(NotFound):
        await store.get_tenant(beta.id)
    with pytest.raises(NotFound):
        await store.delete_tenant(beta.id, actor="admin@org")


async def test_tenant_names_are_unique_and_non_empty(store):
    first = await store.create_tenant("acme", actor="admin")
    with pytest.raises(Conflict) as exc:
        await store.create_tenant("acme", actor="admin")
    assert exc.value.conflicting == first.id
    with pytest.raises(Invalid):
        await store.create_tenant("  ", actor="admin")
    with pytest.raises(Invalid):
        await store.create_tenant("x", metadata=["not", "an", "object"], actor="admin")  # type: ignore[arg-type]
    assert len(await store.list_tenants()) == 1


async def test_deleting_a_tenant_removes_its_keys_teams_policies_and_grants(store):
    import datetime as dt

    t = await store.create_tenant("gone", actor="admin")
    team = await store.create_team(t.id, "ml", actor="admin")
    key, secret = await store.create_key(t.id, name="k", team_id=team.id, actor="admin")
    await store.create_policy(t.id, scope="key", scope_id=key.id, rules={"deny": True}, actor="admin")
    await store.grant_entitlement(
        t.id,
        model_group="gpt-4o",
        starts_on=dt.date(2025, 1, 1),
        ends_on=dt.date(2025, 2, 1),
        exclusive=True,
        actor="admin",
    )
    await store.create_budget(t.id, scope="key", scope_id=key.id, amount=5, actor="admin")
    await store.create_pin(
        t.id, providers=["x"], data_zones=None, work=None, valid_from=None, valid_until=None, actor="admin"
    )
    assert (await store.snapshot()).key_index().lookup(secret) is not None

    await store.delete_tenant(t.id, actor="admin")
    snap = await store.snapshot()
    assert snap.key_index().lookup(secret) is None
    assert snap.teams == {} and snap.policies == () and snap.entitlements == () and snap.budgets == ()
    assert snap.stateful_pins == ()
    # The admin record outlives the tenant.
    events = await store.admin_events(t.id)
    assert events[-1].action == "tenant.delete"
    counts = {"teams": 1, "keys": 1, "policies": 1, "entitlements": 1, "stateful_pins": 1, "budgets": 1}
    assert events[-1].detail == {"name": "gone", **counts}


async def test_teams_are_unique_per_tenant_and_isolated(store):
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    ml_a = await store.create_team(a.id, "ml", actor="admin")
    ml_b = await store.create_team(b.id, "ml", actor="admin")  # same name, other tenant: fine
    assert ml_a.id.startswith("team_") and ml_a.id != ml_b.id
    with pytest.raises(Conflict):
        await store.create_team(a.id, "ml", actor="admin")
    with pytest.raises(NotFound):
        await store.create_team("ten_nosuchtenant", "ml", actor="admin")

    assert [t.id for t in await store.page_teams(a.id, 1000)] == [ml_a.id]
    assert await store.get_team(a.id, ml_a.id) == ml_a
    with pytest.raises(NotFound):
        await store.get_team(a.id, ml_b.id)  # B's team through A's scope
    with pytest.raises(NotFound):
        await store.delete_team(a.id, ml_b.id, actor="admin")
    assert await store.get_team(b.id, ml_b.id) == ml_b


async def test_team_with_active_keys_cannot_be_deleted(store):
    t = await store.create_tenant("t", actor="admin")
    team = await store.create_team(t.id, "ml", actor="admin")
    key, _ = await store.create_key(t.id, name="k", team_id=team.id, actor="admin")
    await store.create_policy(t.id, scope="team", scope_id=team.id, rules={"x": 1}, actor="admin")
    with pytest.raises(Conflict) as exc:
        await store.delete_team(t.id, team.id, actor="admin")
    assert exc.value.conflicting == key.id

    await store.revoke_key(t.id, key.id, actor="admin")
    await store.delete_team(t.id, team.id, actor="admin")
    assert await store.page_teams(t.id, 1000) == []
    assert (await store.get_key(t.id, key.id)).team_id is None  # revoked key kept, detached
    assert await store.page_policies(t.id, 1000) == []  # the team's policies went with it


async def test_a_tenant_has_at_most_max_teams(store, monkeypatch):
    """Every replica holds every team (the snapshot): a tenant admin making team after team grew them all for
    good. Other tenants' are not counted; a deleted team frees its place."""
    from multihome.storage import tenancy

    monkeypatch.setattr(tenancy, "MAX_TEAMS_PER_TENANT", 3, raising=False)
    t = await store.create_tenant("acme", actor="admin")
    other = await store.create_tenant("globex", actor="admin")
    made = [await store.create_team(t.id, f"team-{i}", actor="ta") for i in range(3)]
    with pytest.raises(Invalid, match="the most a tenant may hold"):
        await store.create_team(t.id, "team-3", actor="ta")
    await store.create_team(other.id, "team-3", actor="ta")
    await store.delete_team(t.id, made[0].id, actor="ta")
    await store.create_team(t.id, "team-3", actor="ta")
