from __future__ import annotations

import pytest

from multihome.storage import Invalid, NotFound

pytestmark = pytest.mark.anyio


async def test_policy_crud_at_each_scope(store):
    t = await store.create_tenant("t", actor="admin")
    team = await store.create_team(t.id, "ml", actor="admin")
    key, _ = await store.create_key(t.id, name="k", team_id=team.id, actor="admin")

    pt = await store.create_policy(t.id, scope="tenant", rules={"egress": {"regions": ["eu"]}}, actor="admin")
    assert pt.id.startswith("pol_") and pt.scope_id == t.id
    pteam = await store.create_policy(
        t.id, scope="team", scope_id=team.id, rules={"models": ["gpt-4o"]}, description="ml team", actor="admin"
    )
    pkey = await store.create_policy(t.id, scope="key", scope_id=key.id, rules={"rpm": 10}, actor="admin")

    listed = await store.page_policies(t.id, 1000)
    assert [p.id for p in listed] == [pt.id, pteam.id, pkey.id]
    assert [(p.scope, p.scope_id) for p in listed] == [("tenant", t.id), ("team", team.id), ("key", key.id)]

    updated = await store.update_policy(t.id, pteam.id, rules={"models": ["claude"]}, actor="lead")
    assert updated.rules == {"models": ["claude"]} and updated.description == "ml team"
    assert updated.updated_at >= pteam.updated_at and updated.created_at == pteam.created_at
    assert await store.get_policy(t.id, pteam.id) == updated
    ev = (await store.admin_events(t.id))[-1]
    assert ev.action == "policy.update" and ev.actor == "lead"
    assert ev.detail["before"]["rules"] == {"models": ["gpt-4o"]} and ev.detail["after"]["rules"] == {
        "models": ["claude"]
    }

    await store.delete_policy(t.id, pkey.id, actor="admin")
    with pytest.raises(NotFound):
        await store.get_policy(t.id, pkey.id)
    assert {p.id for p in (await store.snapshot()).policies_for(t.id)} == {pt.id, pteam.id}


async def test_policies_cannot_point_across_tenants(store):
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    team_b = await store.create_team(b.id, "ml", actor="admin")
    key_b, _ = await store.create_key(b.id, name="k", actor="admin")
    pol_b = await store.create_policy(b.id, scope="tenant", rules={}, actor="admin")

    with pytest.raises(NotFound):
        await store.create_policy(a.id, scope="team", scope_id=team_b.id, rules={}, actor="admin")
    with pytest.raises(NotFound):
        await store.create_policy(a.id, scope="key", scope_id=key_b.id, rules={}, actor="admin")
    with pytest.raises(Invalid):
        await store.create_policy(a.id, scope="tenant", scope_id=b.id, rules={}, actor="admin")
    with pytest.raises(Invalid):
        await store.create_policy(a.id, scope="org", rules={}, actor="admin")  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        await store.create_policy(a.id, scope="tenant", rules=["x"], actor="admin")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await store.get_policy(a.id, pol_b.id)
    with pytest.raises(NotFound):
        await store.update_policy(a.id, pol_b.id, rules={"hijack": True}, actor="admin")
    with pytest.raises(NotFound):
        await store.delete_policy(a.id, pol_b.id, actor="admin")
    assert await store.page_policies(a.id, 1000) == []
    assert (await store.get_policy(b.id, pol_b.id)).rules == {}


async def test_a_tenant_holds_at_most_max_rules_characters(store, monkeypatch):
    """1,000 policies of up to 256 KiB each were 256 MB of rules that every replica holds: their total is
    bounded too, on create and on an update that grows one (the policy replaced is not counted twice)."""
    import json

    from multihome.storage import policies

    rules = {"egress": {"regions": ["eu"]}}
    size = len(json.dumps(rules))
    monkeypatch.setattr(policies, "RULES_MAX_CHARS_PER_TENANT", 3 * size, raising=False)
    t = await store.create_tenant("acme", actor="admin")
    other = await store.create_tenant("globex", actor="admin")
    made = [await store.create_policy(t.id, scope="tenant", rules=rules, actor="ta") for _ in range(3)]
    with pytest.raises(Invalid, match="the most a tenant may hold") as refused:
        await store.create_policy(t.id, scope="tenant", rules=rules, actor="ta")
    assert refused.value.field == "rules"
    await store.create_policy(other.id, scope="tenant", rules=rules, actor="ta")  # another tenant's room
    await store.update_policy(t.id, made[0].id, rules={"egress": {"regions": ["us"]}}, actor="ta")  # same size
    bigger = {"egress": {"regions": ["eu", "us"]}}
    with pytest.raises(Invalid, match="the most a tenant may hold"):
        await store.update_policy(t.id, made[0].id, rules=bigger, actor="ta")
    assert (await store.get_policy(t.id, made[0].id)).rules == {"egress": {"regions": ["us"]}}  # unchanged
    await store.delete_policy(t.id, made[1].id, actor="ta")
    await store.update_policy(t.id, made[0].id, rules=bigger, actor="ta")  # room again


async def test_a_tenant_holds_at_most_max_policies(store, monkeypatch):
    """Every replica compiles and holds every policy (each up to 256 KiB of rules): a tenant admin making policy
    after policy grew them all for good. Other tenants' are not counted; a deleted policy frees its place."""
    from multihome.storage import policies

    monkeypatch.setattr(policies, "MAX_POLICIES_PER_TENANT", 3, raising=False)
    t = await store.create_tenant("acme", actor="admin")
    other = await store.create_tenant("globex", actor="admin")
    rules = {"egress": {"regions": ["eu"]}}
    made = [await store.create_policy(t.id, scope="tenant", rules=rules, actor="ta") for _ in range(3)]
    with pytest.raises(Invalid, match="the most a tenant may hold"):
        await store.create_policy(t.id, scope="tenant", rules=rules, actor="ta")
    await store.create_policy(other.id, scope="tenant", rules=rules, actor="ta")
    await store.delete_policy(t.id, made[0].id, actor="ta")
    await store.create_policy(t.id, scope="tenant", rules=rules, actor="ta")
