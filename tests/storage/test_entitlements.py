from __future__ import annotations

import asyncio
import itertools
from datetime import date

import pytest

from multihome.storage import Conflict, Invalid, NotFound, open_store

pytestmark = pytest.mark.anyio

JAN1, JUN30, JUL1, DEC31 = date(2025, 1, 1), date(2025, 6, 30), date(2025, 7, 1), date(2025, 12, 31)


async def _tenants(store, n):
    return [await store.create_tenant(f"t{i:02d}", actor="admin") for i in range(n)]


async def test_exclusive_grant_refuses_overlap_with_other_tenants(store):
    a, b = await _tenants(store, 2)
    shared = await store.grant_entitlement(b.id, model_group="gpt-4o", starts_on=JAN1, ends_on=JUN30, actor="admin")
    with pytest.raises(Conflict) as exc:
        await store.grant_entitlement(
            a.id, model_group="gpt-4o", starts_on=JUN30, ends_on=DEC31, exclusive=True, actor="admin"
        )
    assert exc.value.conflicting == shared.id and shared.id in str(exc.value) and b.id in str(exc.value)
    # Adjacent (no shared day), other model group, or the same tenant: all fine.
    excl = await store.grant_entitlement(
        a.id, model_group="gpt-4o", starts_on=JUL1, ends_on=DEC31, exclusive=True, actor="admin"
    )
    assert excl.id.startswith("ent_") and excl.exclusive
    await store.grant_entitlement(
        a.id, model_group="claude", starts_on=JAN1, ends_on=DEC31, exclusive=True, actor="admin"
    )
    await store.grant_entitlement(a.id, model_group="gpt-4o", starts_on=JUL1, ends_on=JUL1, actor="admin")


async def test_any_grant_refuses_overlap_with_another_tenants_exclusive_grant(store):
    a, b, c = await _tenants(store, 3)
    excl = await store.grant_entitlement(
        a.id, model_group="m", starts_on=JAN1, ends_on=JUN30, exclusive=True, actor="admin"
    )
    for start, end in [(JAN1, JAN1), (JUN30, DEC31), (date(2024, 1, 1), date(2026, 1, 1))]:
        with pytest.raises(Conflict) as exc:
            await store.grant_entitlement(b.id, model_group="m", starts_on=start, ends_on=end, actor="admin")
        assert exc.value.conflicting == excl.id
    await store.grant_entitlement(b.id, model_group="m", starts_on=JUL1, ends_on=DEC31, actor="admin")
    await store.grant_entitlement(c.id, model_group="m", starts_on=JUL1, ends_on=DEC31, actor="admin")  # both shared

    await store.revoke_entitlement(a.id, excl.id, actor="admin")  # revoked grants block nothing
    await store.grant_entitlement(b.id, model_group="m", starts_on=JAN1, ends_on=JUN30, actor="admin")
    assert [e.id for e in await store.page_entitlements(a.id, 1000)] == []
    assert [e.id for e in await store.page_entitlements(a.id, 1000, include_revoked=True)] == [excl.id]


async def test_grant_validation_and_isolation(store):
    a, b = await _tenants(store, 2)
    with pytest.raises(Invalid):
        await store.grant_entitlement(a.id, model_group="m", starts_on=DEC31, ends_on=JAN1, actor="admin")
    with pytest.raises(Invalid):
        await store.grant_entitlement(a.id, model_group="", starts_on=JAN1, ends_on=DEC31, actor="admin")
    with pytest.raises(NotFound):
        await store.grant_entitlement("ten_missing", model_group="m", starts_on=JAN1, ends_on=DEC31, actor="admin")
    ent_b = await store.grant_entitlement(b.id, model_group="m", starts_on=JAN1, ends_on=DEC31, actor="admin")
    with pytest.raises(NotFound):
        await store.revoke_entitlement(a.id, ent_b.id, actor="admin")
    with pytest.raises(NotFound):
        await store.get_entitlement(a.id, ent_b.id)
    assert await store.page_entitlements(a.id, 1000) == []
    assert (await store.get_entitlement(b.id, ent_b.id)).revoked_at is None


async def test_twenty_concurrent_exclusive_grants_from_two_replicas_exactly_one_wins(store, store2):
    tenants = await _tenants(store, 20)

    async def grant(i, t):
        replica = store if i % 2 else store2
        return await replica.grant_entitlement(
            t.id, model_group="gpt-4o", starts_on=JAN1, ends_on=DEC31, exclusive=True, actor=f"admin{i}"
        )

    results = await asyncio.gather(*(grant(i, t) for i, t in enumerate(tenants)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(r, Conflict) and r.conflicting == winners[0].id for r in losers), losers
    live = (await store.snapshot()).entitlements
    assert [e.id for e in live] == [winners[0].id]
    assert sum(e.action == "entitlement.grant" for e in await store.admin_events(limit=1000)) == 1


async def test_concurrent_mixed_grants_never_break_exclusivity(store, store2):
    tenants = await _tenants(store, 12)
    windows = [(JAN1, JUN30), (JUL1, DEC31), (date(2025, 4, 1), date(2025, 9, 30))]

    async def grant(i, t):
        start, end = windows[i % 3]
        return await (store, store2)[i % 2].grant_entitlement(
            t.id, model_group="m", starts_on=start, ends_on=end, exclusive=i % 4 < 2, actor="admin"
        )

    results = await asyncio.gather(*(grant(i, t) for i, t in enumerate(tenants)), return_exceptions=True)
    assert all(not isinstance(r, BaseException) or isinstance(r, Conflict) for r in results), results
    live = (await store2.snapshot()).entitlements
    assert live, "at least one grant must win"
    for x, y in itertools.combinations(live, 2):
        if x.tenant_id != y.tenant_id and (x.exclusive or y.exclusive):
            assert not x.overlaps(y.starts_on, y.ends_on), (x, y)


async def test_exclusive_grants_race_across_separate_engines(migrated_url, store):
    """Five independent Store instances (separate pools) on one database, as five replicas."""
    tenants = await _tenants(store, 5)
    replicas = [await open_store(migrated_url) for _ in range(5)]
    try:
        results = await asyncio.gather(
            *(
                r.grant_entitlement(t.id, model_group="x", starts_on=JAN1, ends_on=JAN1, exclusive=True, actor="a")
                for r, t in zip(replicas, tenants)
            ),
            return_exceptions=True,
        )
    finally:
        for r in replicas:
            await r.close()
    assert sum(not isinstance(r, BaseException) for r in results) == 1, results


async def test_family_grants_collide_with_exact_ones_both_ways_within_their_terms(store):
    """Issue 11 #9: "legal-*" covers "legal-ft", so an exclusive grant on either side refuses the other."""
    a, b, c = await _tenants(store, 3)
    ft = await store.grant_entitlement(
        a.id, model_group="legal-ft", starts_on=JAN1, ends_on=JUN30, exclusive=True, actor="admin"
    )
    for group in ("legal-*", "leg*", "*"):  # a family covering another tenant's exclusive grant
        with pytest.raises(Conflict) as exc:
            await store.grant_entitlement(b.id, model_group=group, starts_on=JUN30, ends_on=DEC31, actor="admin")
        assert exc.value.conflicting == ft.id and ft.id in str(exc.value)
    family = await store.grant_entitlement(
        b.id, model_group="legal-*", starts_on=JUL1, ends_on=DEC31, exclusive=True, actor="admin"
    )  # after the exclusive term: fine
    for group, start in (("legal-ft", JUL1), ("legal-chat", DEC31), ("legal-x*", JUL1), ("l*", DEC31)):
        with pytest.raises(Conflict) as exc:  # under, or overlapping, another tenant's exclusive family
            await store.grant_entitlement(c.id, model_group=group, starts_on=start, ends_on=DEC31, actor="admin")
        assert exc.value.conflicting == family.id
    # Not covered, not overlapping in time, the same tenant, or revoked: no conflict.
    await store.grant_entitlement(
        c.id, model_group="legalese", starts_on=JAN1, ends_on=DEC31, exclusive=True, actor="admin"
    )
    await store.grant_entitlement(
        c.id,
        model_group="legal-ft",
        starts_on=date(2026, 1, 1),
        ends_on=date(2026, 12, 31),
        exclusive=True,
        actor="admin",
    )
    await store.grant_entitlement(b.id, model_group="legal-ft", starts_on=JUL1, ends_on=JUL1, actor="admin")
    await store.revoke_entitlement(b.id, family.id, actor="admin")
    with pytest.raises(Invalid) as bad:
        await store.grant_entitlement(a.id, model_group="legal-*-ft", starts_on=JAN1, ends_on=DEC31, actor="admin")
    assert bad.value.field == "model_group"


async def test_concurrent_family_and_exact_exclusive_grants_exactly_one_wins(store, store2):
    tenants = await _tenants(store, 12)
    groups = ["legal-*", "legal-ft", "legal-f*", "*"]

    async def grant(i, t):
        return await (store, store2)[i % 2].grant_entitlement(
            t.id, model_group=groups[i % len(groups)], starts_on=JAN1, ends_on=DEC31, exclusive=True, actor="admin"
        )

    results = await asyncio.gather(*(grant(i, t) for i, t in enumerate(tenants)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException)), results
