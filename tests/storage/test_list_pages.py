"""The lists a tenant's admin can grow (keys, teams, policies, token revocations) read a page at a time, on SQLite
and PostgreSQL (storage/row_reads.py `read_page`): oldest first, each row once; a cursor whose row was deleted
between two pages keeps its place (its id carries its creation time, storage/ids.py `timed_id`); another tenant's
id is a place in this list's order, nothing of that tenant's shown; a cursor that is no id the gateway mints is
refused as Invalid (a 400), PostgreSQL's included, which refuses a query holding a NUL or a lone surrogate."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from multihome.storage import Invalid

pytestmark = pytest.mark.anyio
NOT_A_ROW = ("\x00abc", "\ud800", "x" * 10_000)  # none any database holds, and a long one


async def _walk(read, tenant: str, limit: int, after: str | None = None) -> list[str]:
    seen = []
    while True:
        page = await read(tenant, limit, after)
        seen += [row.id for row in page]
        assert len(page) <= limit and page.last == (page[-1].id if page else None)
        if not page.more:
            return seen
        after = page.last


async def test_teams_and_policies_oldest_first_a_page_at_a_time(store):
    t = await store.create_tenant("acme", actor="admin")
    other = await store.create_tenant("globex", actor="admin")
    teams = [await store.create_team(t.id, f"team-{i}", actor="ta") for i in reversed(range(7))]
    made = [await store.create_policy(t.id, scope="tenant", rules={}, actor="ta") for _ in range(7)]
    await store.create_team(other.id, "team-9", actor="ta")
    await store.create_policy(other.id, scope="tenant", rules={}, actor="ta")
    assert await _walk(store.page_teams, t.id, 3) == [team.id for team in teams]
    assert await _walk(store.page_policies, t.id, 3) == [p.id for p in made]
    assert [p.id for p in await store.page_policies(t.id, 1000)] == [p.id for p in made]


async def _revoke(store, tenant: str, subject: str):
    return await store.create_token_revocation(
        kind="subject", issuer="https://idp.example", subject=subject, tenant_id=tenant, actor="ta"
    )


async def test_entitlements_and_stateful_pins_oldest_first_a_page_at_a_time_revoked_ones_too(store):
    """An org-admin's grants and pins stay stored once revoked: each ever made is a row of its list (read whole)."""
    t = await store.create_tenant("acme", actor="admin")
    grant = {"model_group": "m", "starts_on": date(2026, 1, 1), "ends_on": date(2026, 12, 31), "actor": "admin"}
    grants = [(await store.grant_entitlement(t.id, note=f"{i}", **grant)).id for i in range(7)]
    pin = {"providers": ["p"], "data_zones": None, "work": None, "valid_from": None, "valid_until": None}
    pins = [(await store.create_pin(t.id, note=f"{i}", actor="admin", **pin)).id for i in range(7)]
    await store.revoke_entitlement(t.id, grants[3], actor="admin")
    await store.revoke_pin(t.id, pins[3], actor="admin")

    async def entitlements(tenant: str, limit: int, after: str | None = None):
        return await store.page_entitlements(tenant, limit, after, include_revoked=True)

    async def stateful_pins(tenant: str, limit: int, after: str | None = None):
        return await store.page_pins(tenant, limit, after, include_revoked=True)

    assert await _walk(entitlements, t.id, 3) == grants
    assert await _walk(stateful_pins, t.id, 3) == pins
    assert len(await store.page_entitlements(t.id, 1000)) == len(await store.page_pins(t.id, 1000)) == 6  # live


async def test_a_tenant_holds_at_most_max_live_entitlements_and_pins_even_at_once(store, monkeypatch):
    """An org-admin's grants and pins had no bound, and every replica's snapshot holds each live one. Counted and
    inserted under a lock, so creates at once cannot all find room; a revoked one frees its place."""
    from multihome.storage import entitlements, pins

    monkeypatch.setattr(entitlements, "MAX_LIVE_PER_TENANT", 3)
    monkeypatch.setattr(pins, "MAX_LIVE_PER_TENANT", 3)
    t = await store.create_tenant("acme", actor="admin")
    grant = {"model_group": "m", "starts_on": date(2026, 1, 1), "ends_on": date(2026, 12, 31), "actor": "admin"}
    pin = {"providers": ["p"], "data_zones": None, "work": None, "valid_from": None, "valid_until": None}
    makers = {
        "entitlements": (lambda: store.grant_entitlement(t.id, **grant), store.revoke_entitlement),
        "pins": (lambda: store.create_pin(t.id, actor="admin", **pin), store.revoke_pin),
    }
    for what, (make, revoke) in makers.items():

        async def attempt(make=make):
            try:
                return await make()
            except Invalid as exc:
                return exc

        done = await asyncio.gather(*(attempt() for _ in range(6)))
        refused = [d for d in done if isinstance(d, Invalid)]
        assert len(refused) == 3 and "the most a tenant may hold (3)" in str(refused[0]), what
        await revoke(t.id, next(d for d in done if not isinstance(d, Invalid)).id, actor="admin")
        await make()  # the revoked one's place


async def test_a_walk_goes_on_past_a_cursor_row_deleted_between_pages(store):
    """Another admin deletes the last row of the page a client has read, and the one before it: the next page
    starts after it all the same (it was a 400, the walk ended half-way)."""
    t = await store.create_tenant("acme", actor="admin")
    made = {
        "teams": [(await store.create_team(t.id, f"team-{i}", actor="ta")).id for i in range(7)],
        "policies": [(await store.create_policy(t.id, scope="tenant", rules={}, actor="ta")).id for _ in range(7)],
        "revocations": [(await _revoke(store, t.id, f"s{i}")).id for i in range(7)],
    }
    lists = {
        "teams": (store.page_teams, lambda row_id: store.delete_team(t.id, row_id, actor="ta")),
        "policies": (store.page_policies, lambda row_id: store.delete_policy(t.id, row_id, actor="ta")),
        "revocations": (store.page_token_revocations, lambda row_id: store.delete_token_revocation(row_id, actor="ta")),
    }
    for name, (read, delete) in lists.items():
        first = await read(t.id, 3)
        assert [row.id for row in first] == made[name][:3] and first.more, name
        for row_id in made[name][1:3]:
            await delete(row_id)
        assert await _walk(read, t.id, 3, first.last) == made[name][3:], name


async def test_a_cursor_that_is_no_row_of_the_list_is_invalid_or_placed_by_its_time(store):
    t = await store.create_tenant("acme", actor="admin")
    other = await store.create_tenant("globex", actor="admin")
    await store.create_team(t.id, "mine", actor="ta")
    theirs = await store.create_team(other.id, "theirs", actor="ta")
    await store.create_policy(t.id, scope="tenant", rules={}, actor="ta")
    their_policy = await store.create_policy(other.id, scope="tenant", rules={}, actor="ta")
    await store.create_key(t.id, name="mine", actor="ta")
    their_key, _ = await store.create_key(other.id, name="theirs", actor="ta")
    for read, foreign in (("page_keys", their_key.id), ("page_teams", theirs.id), ("page_policies", their_policy.id)):
        assert list(await getattr(store, read)(t.id, 10, foreign)) == []  # made after this tenant's: none after it
        for after in (*NOT_A_ROW, "team_" + "a" * 20, "team_" + "a" * 21):  # a random id (as tenants'), no id
            with pytest.raises(Invalid, match="is not the id of a row of this list"):
                await getattr(store, read)(t.id, 10, after)
