from __future__ import annotations

from datetime import date

import pytest

from multihome.storage import Conflict, Invalid

pytestmark = pytest.mark.anyio


async def test_every_change_writes_one_event_and_bumps_the_version_once(store):
    assert await store.version() == 0
    steps = []

    async def step(action, coro):
        before = await store.version()
        result = await coro
        assert await store.version() == before + 1, action
        steps.append(action)
        return result

    t = await step("tenant.create", store.create_tenant("t", actor="alice"))
    team = await step("team.create", store.create_team(t.id, "ml", actor="alice"))
    key, _ = await step("key.create", store.create_key(t.id, name="k", team_id=team.id, actor="bob"))
    pol = await step("policy.create", store.create_policy(t.id, scope="tenant", rules={}, actor="bob"))
    await step("policy.update", store.update_policy(t.id, pol.id, description="d", actor="bob"))
    ent = await step(
        "entitlement.grant",
        store.grant_entitlement(
            t.id, model_group="m", starts_on=date(2025, 1, 1), ends_on=date(2025, 1, 2), exclusive=True, actor="carol"
        ),
    )
    await step("entitlement.revoke", store.revoke_entitlement(t.id, ent.id, actor="carol"))
    await step("key.revoke", store.revoke_key(t.id, key.id, actor="bob"))
    await step("policy.delete", store.delete_policy(t.id, pol.id, actor="bob"))
    await step("team.delete", store.delete_team(t.id, team.id, actor="alice"))
    await step("tenant.delete", store.delete_tenant(t.id, actor="alice"))

    events = await store.admin_events(limit=100)
    assert [e.action for e in events] == steps
    assert [e.seq for e in events] == list(range(1, len(steps) + 1))
    assert all(e.id.startswith("evt_") and e.tenant_id == t.id and e.at.tzinfo is not None for e in events)
    assert [e.actor for e in events][:3] == ["alice", "alice", "bob"]
    assert events[2].object_type == "api_key" and events[2].object_id == key.id


async def test_refused_changes_leave_no_trace(store):
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    await store.grant_entitlement(
        a.id, model_group="m", starts_on=date(2025, 1, 1), ends_on=date(2025, 12, 31), exclusive=True, actor="admin"
    )
    version = await store.version()
    with pytest.raises(Conflict):
        await store.grant_entitlement(
            b.id, model_group="m", starts_on=date(2025, 5, 1), ends_on=date(2025, 5, 2), actor="admin"
        )
    with pytest.raises(Conflict):
        await store.create_tenant("a", actor="admin")
    with pytest.raises(Invalid):
        await store.create_tenant("c", actor="")  # an anonymous change is refused
    assert await store.version() == version
    assert len(await store.admin_events()) == version
    assert [t.name for t in await store.list_tenants()] == ["a", "b"]


async def test_admin_events_filter_by_tenant_and_page(store):
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    for i in range(5):
        await store.create_team(a.id, f"a{i}", actor="admin")
        await store.create_team(b.id, f"b{i}", actor="admin")
    only_b = await store.admin_events(b.id)
    assert len(only_b) == 6 and all(e.tenant_id == b.id for e in only_b)

    pages, after = [], None
    for _ in range(10):  # bounded
        page = await store.admin_events(a.id, limit=2, after=after)
        if not page:
            break
        pages.append(page)
        after = page[-1].seq
    assert [len(p) for p in pages] == [2, 2, 2]
    flat = [e for p in pages for e in p]
    assert [e.detail.get("name") for e in flat] == ["a", "a0", "a1", "a2", "a3", "a4"]
    with pytest.raises(Invalid):
        await store.admin_events(limit=0)
