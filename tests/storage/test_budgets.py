"""Budgets in the store, on SQLite and PostgreSQL: one per counter, exact amounts, tenant isolation,
and every change bumps the version exactly once so every replica's snapshot picks it up."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from multihome.storage import Conflict, Invalid, NotFound, SnapshotCache

pytestmark = pytest.mark.anyio


async def test_budget_crud_bumps_the_version_once_per_change_and_is_recorded(store):
    t = await store.create_tenant("t", actor="admin")
    team = await store.create_team(t.id, "ml", actor="admin")
    key, _ = await store.create_key(t.id, name="k", team_id=team.id, actor="admin")

    v = await store.version()
    bt = await store.create_budget(t.id, scope="tenant", amount="500.00", actor="lead")
    assert await store.version() == v + 1
    assert bt.id.startswith("bud_") and bt.scope_id == t.id and bt.amount == "500"
    assert (bt.currency, bt.period, bt.mode) == ("USD", "month", "hard")
    bteam = await store.create_budget(
        t.id, scope="team", scope_id=team.id, amount=25, period="day", mode="soft", actor="lead"
    )
    bkey = await store.create_budget(
        t.id, scope="key", scope_id=key.id, amount=0.1, currency="eur", period="total", actor="lead"
    )
    assert (bkey.amount, bkey.currency) == ("0.1", "EUR")  # a float's shortest text, the code upper-cased
    assert await store.version() == v + 3
    assert await store.list_budgets(t.id) == [bt, bteam, bkey]
    assert await store.get_budget(t.id, bteam.id) == bteam

    raised = await store.update_budget(t.id, bkey.id, amount="2.000000001", actor="boss")
    assert await store.version() == v + 4
    assert raised.amount == "2.000000001" and raised.mode == "hard" and raised.created_at == bkey.created_at
    assert raised.updated_at >= bkey.updated_at
    hard = await store.update_budget(t.id, bteam.id, mode="hard", actor="boss")
    assert (hard.amount, hard.mode) == ("25", "hard")

    snap = await store.snapshot()
    assert snap.version == v + 5 and snap.budgets == (bt, hard, raised)
    assert snap.budgets_for(t.id) == [bt, hard, raised] and snap.budgets_for("ten_other") == []

    gone = await store.delete_budget(t.id, bt.id, actor="boss")
    assert gone == bt and await store.version() == v + 6
    with pytest.raises(NotFound):
        await store.get_budget(t.id, bt.id)
    events = [(e.action, e.actor, e.object_id) for e in (await store.admin_events(t.id))[-6:]]
    assert events == [
        ("budget.create", "lead", bt.id),
        ("budget.create", "lead", bteam.id),
        ("budget.create", "lead", bkey.id),
        ("budget.update", "boss", bkey.id),
        ("budget.update", "boss", bteam.id),
        ("budget.delete", "boss", bt.id),
    ]
    update = (await store.admin_events(t.id))[-3]
    assert update.detail == {"before": {"amount": "0.1"}, "after": {"amount": "2.000000001"}, "role": "org-admin"}


async def test_one_budget_per_counter(store):
    t = await store.create_tenant("t", actor="admin")
    first = await store.create_budget(t.id, scope="tenant", amount=5, period="day", actor="admin")
    v = await store.version()
    with pytest.raises(Conflict) as dup:
        await store.create_budget(t.id, scope="tenant", scope_id=t.id, amount=50, period="day", actor="admin")
    assert dup.value.conflicting == first.id and "change its amount" in str(dup.value)
    assert await store.version() == v  # a refused change leaves nothing behind
    # Another period or another currency is another counter.
    await store.create_budget(t.id, scope="tenant", amount=5, period="month", actor="admin")
    await store.create_budget(t.id, scope="tenant", amount=5, period="day", currency="EUR", actor="admin")
    assert len(await store.list_budgets(t.id)) == 3


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("amount", 0, "greater than 0"),
        ("amount", "-1", "greater than 0"),
        ("amount", "abc", "decimal number"),
        ("amount", "NaN", "decimal number"),
        ("amount", "Infinity", "decimal number"),
        ("amount", True, "decimal number"),
        ("amount", "0.0000000001", "9 decimal places"),
        ("amount", "2e9", "at most"),
        ("amount", None, "decimal number"),
        ("currency", "US", "ISO 4217"),
        ("currency", "US$", "ISO 4217"),
        ("period", "week", "period must be"),
        ("mode", "strict", "mode must be"),
        ("scope", "org", "scope must be"),
    ],
)
async def test_bad_values_are_refused_and_leave_nothing_behind(store, field, value, message):
    t = await store.create_tenant("t", actor="admin")
    v = await store.version()
    args = {"scope": "tenant", "amount": "1", field: value}
    with pytest.raises(Invalid, match=message):
        await store.create_budget(t.id, **args, actor="admin")
    assert await store.version() == v and await store.list_budgets(t.id) == []


async def test_update_needs_a_change_and_checks_it(store):
    t = await store.create_tenant("t", actor="admin")
    b = await store.create_budget(t.id, scope="tenant", amount=5, actor="admin")
    v = await store.version()
    with pytest.raises(Invalid, match="nothing to change"):
        await store.update_budget(t.id, b.id, actor="admin")
    with pytest.raises(Invalid, match="greater than 0"):
        await store.update_budget(t.id, b.id, amount="0", actor="admin")
    with pytest.raises(Invalid, match="mode must be"):
        await store.update_budget(t.id, b.id, mode="loose", actor="admin")
    assert await store.version() == v and await store.get_budget(t.id, b.id) == b


async def test_budgets_cannot_point_across_tenants(store):
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    team_b = await store.create_team(b.id, "ml", actor="admin")
    key_b, _ = await store.create_key(b.id, name="k", actor="admin")
    bud_b = await store.create_budget(b.id, scope="key", scope_id=key_b.id, amount=1, actor="admin")

    with pytest.raises(NotFound, match="team"):
        await store.create_budget(a.id, scope="team", scope_id=team_b.id, amount=1, actor="admin")
    with pytest.raises(NotFound, match="api key"):
        await store.create_budget(a.id, scope="key", scope_id=key_b.id, amount=1, actor="admin")
    with pytest.raises(Invalid, match="tenant id"):
        await store.create_budget(a.id, scope="tenant", scope_id=b.id, amount=1, actor="admin")
    with pytest.raises(NotFound, match="tenant"):
        await store.create_budget("ten_missing", scope="tenant", amount=1, actor="admin")
    with pytest.raises(NotFound):
        await store.get_budget(a.id, bud_b.id)
    with pytest.raises(NotFound):
        await store.update_budget(a.id, bud_b.id, amount=1000, actor="admin")
    with pytest.raises(NotFound):
        await store.delete_budget(a.id, bud_b.id, actor="admin")
    assert await store.list_budgets(a.id) == [] and await store.get_budget(b.id, bud_b.id) == bud_b


async def test_deleting_a_team_deletes_its_budgets(store):
    t = await store.create_tenant("t", actor="admin")
    team = await store.create_team(t.id, "ml", actor="admin")
    kept = await store.create_budget(t.id, scope="tenant", amount=1, actor="admin")
    await store.create_budget(t.id, scope="team", scope_id=team.id, amount=1, actor="admin")
    await store.delete_team(t.id, team.id, actor="admin")
    assert await store.list_budgets(t.id) == [kept]


async def test_concurrent_creates_of_one_counter_from_two_replicas_one_wins(store, store2):
    t = await store.create_tenant("t", actor="admin")
    key, _ = await store.create_key(t.id, name="k", actor="admin")

    async def create(s, i):
        try:
            return await s.create_budget(t.id, scope="key", scope_id=key.id, amount=i + 1, actor="admin")
        except Conflict as exc:
            return exc

    results = await asyncio.gather(*(create(store if i % 2 else store2, i) for i in range(10)))
    won = [r for r in results if not isinstance(r, Conflict)]
    assert len(won) == 1 and len(results) - 1 == sum(isinstance(r, Conflict) for r in results)
    assert await store.list_budgets(t.id) == won


async def test_budget_changes_reach_another_replicas_snapshot_and_its_listeners(store, store2):
    t = await store.create_tenant("t", actor="admin")
    seen = []
    cache = SnapshotCache(store2, interval_s=0.05)
    cache.subscribe(lambda snap: seen.append(snap.budgets))
    await cache.start()
    try:
        assert seen == [()]
        b = await store.create_budget(t.id, scope="tenant", amount="9.5", actor="admin")
        deadline = time.monotonic() + 60
        while cache.snapshot.budgets != (b,) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.snapshot.budgets == (b,) and seen[-1] == (b,)
        await store.delete_budget(t.id, b.id, actor="admin")
        deadline = time.monotonic() + 60
        while cache.snapshot.budgets and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cache.snapshot.budgets == () and seen[-1] == ()
    finally:
        await cache.stop()


async def test_a_tenant_holds_at_most_max_budgets(store, monkeypatch):
    """Each budget is a metrics series (headroom) and a rule: a tenant admin could make one per currency code
    and period on the tenant alone. Other tenants are not held to this tenant's count."""
    from multihome.storage import budgets

    monkeypatch.setattr(budgets, "MAX_BUDGETS_PER_TENANT", 3)
    t = await store.create_tenant("t", actor="admin")
    other = await store.create_tenant("u", actor="admin")
    for currency in ("AAA", "AAB", "AAC"):
        await store.create_budget(t.id, scope="tenant", amount="1", currency=currency, actor="ta")
    with pytest.raises(Invalid, match="at most|the most a tenant may hold"):
        await store.create_budget(t.id, scope="tenant", amount="1", currency="AAD", actor="ta")
    await store.create_budget(other.id, scope="tenant", amount="1", currency="AAD", actor="ta")
    await store.delete_budget(t.id, (await store.list_budgets(t.id))[0].id, actor="ta")
    await store.create_budget(t.id, scope="tenant", amount="1", currency="AAD", actor="ta")


async def test_concurrent_creates_do_not_pass_the_cap(store, monkeypatch):
    """Creates on different keys (different slots) at once: each counts the tenant's budgets then inserts,
    and on PostgreSQL they used to lock only their slot, so all counted the same and all inserted. Each
    create is held after its checks begin until all have begun (or a moment passed: a create that holds
    the tenant's lock keeps the others out), so the race does not depend on timing."""
    from multihome.storage import budgets

    monkeypatch.setattr(budgets, "MAX_BUDGETS_PER_TENANT", 2)
    t = await store.create_tenant("t", actor="admin")
    keys = [(await store.create_key(t.id, name=f"k{i}", actor="admin"))[0] for i in range(4)]
    require, arrived, everyone = store._require_scope, [], asyncio.Event()

    async def held(*args, **kwargs):
        await require(*args, **kwargs)
        arrived.append(1)
        if len(arrived) == len(keys):
            everyone.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 0.5)

    monkeypatch.setattr(store, "_require_scope", held)

    async def create(key_id: str) -> str:
        try:
            await store.create_budget(t.id, scope="key", scope_id=key_id, amount="1", actor="ta")
            return "created"
        except Invalid:
            return "refused"

    outcomes = await asyncio.gather(*(create(k.id) for k in keys))
    # Before the fix, on PostgreSQL: four created, two past the cap.
    assert sorted(outcomes) == ["created", "created", "refused", "refused"], outcomes
    assert len(await store.list_budgets(t.id)) == 2
