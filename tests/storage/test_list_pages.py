"""The lists a tenant's admin can grow (keys, teams, policies) read a page at a time, on SQLite and PostgreSQL
(storage/row_reads.py `read_page`): in order, each row once, and a cursor that is no row of the list refused as
Invalid (a 400), PostgreSQL's included, which refuses a query holding a NUL or a lone surrogate."""

from __future__ import annotations

import pytest

from multihome.storage import Invalid

pytestmark = pytest.mark.anyio
NOT_A_ROW = ("\x00abc", "\ud800", "x" * 10_000)  # none any database holds, and a long one


async def _walk(read, tenant: str, limit: int) -> list[str]:
    seen, after = [], None
    while True:
        page = await read(tenant, limit, after)
        seen += [row.id for row in page]
        assert len(page) <= limit and page.last == (page[-1].id if page else None)
        if not page.more:
            return seen
        after = page.last


async def test_teams_by_name_and_policies_oldest_first_a_page_at_a_time(store):
    t = await store.create_tenant("acme", actor="admin")
    other = await store.create_tenant("globex", actor="admin")
    teams = [await store.create_team(t.id, f"team-{i}", actor="ta") for i in reversed(range(7))]
    made = [await store.create_policy(t.id, scope="tenant", rules={}, actor="ta") for _ in range(7)]
    await store.create_team(other.id, "team-9", actor="ta")
    await store.create_policy(other.id, scope="tenant", rules={}, actor="ta")
    assert await _walk(store.page_teams, t.id, 3) == [team.id for team in reversed(teams)]
    assert await _walk(store.page_policies, t.id, 3) == [p.id for p in made]
    assert [p.id for p in await store.page_policies(t.id, 1000)] == [p.id for p in made]


async def test_a_cursor_that_is_no_row_of_the_list_is_invalid(store):
    t = await store.create_tenant("acme", actor="admin")
    other = await store.create_tenant("globex", actor="admin")
    await store.create_team(t.id, "mine", actor="ta")
    theirs = await store.create_team(other.id, "theirs", actor="ta")
    await store.create_policy(t.id, scope="tenant", rules={}, actor="ta")
    their_policy = await store.create_policy(other.id, scope="tenant", rules={}, actor="ta")
    await store.create_key(t.id, name="mine", actor="ta")
    their_key, _ = await store.create_key(other.id, name="theirs", actor="ta")
    for read, foreign in (("page_keys", their_key.id), ("page_teams", theirs.id), ("page_policies", their_policy.id)):
        for after in (foreign, *NOT_A_ROW):
            with pytest.raises(Invalid, match="is not the id of a row of this list"):
                await getattr(store, read)(t.id, 10, after)
