"""The MCP server registry on SQLite and PostgreSQL: rows per tenant, header values sealed bound to
their row (a copied blob does not open), never in the database file or a pg_dump in clear."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from multihome.storage.errors import Conflict, Invalid, NotFound, UnreadableRow
from multihome.storage.tables import mcp_servers
from pg import stored_bytes

pytestmark = pytest.mark.anyio
MARKER = "HEADER-PLAINTEXT-MARKER-mcp-41c9"


async def _add(store, tenant: str, name: str, headers: dict[str, str] | None = None):
    return await store.create(
        tenant,
        name,
        url="https://mcp.example.com/mcp",
        description="",
        allowed_tools=None,
        require_approval="always",
        headers=headers or {},
        actor="tester",
    )


async def test_rows_per_tenant_with_sealed_headers(store, db_url):
    await _add(store, "t1", "crm", {"Authorization": f"Bearer {MARKER}"})
    await _add(store, "t1", "docs")
    await _add(store, "t2", "crm", {"X-Key": MARKER})
    with pytest.raises(Conflict):
        await _add(store, "t1", "crm")
    assert [s.name for s in await store.page("t1", 1000)] == ["crm", "docs"]
    assert (await store.get("t1", "crm")).header_names == ["Authorization"]
    assert dict((await store.endpoint("t1", "crm")).headers) == {"Authorization": f"Bearer {MARKER}"}
    assert dict((await store.endpoint("t1", "docs")).headers) == {}
    with pytest.raises(NotFound):
        await store.get("t3", "crm")
    with pytest.raises(NotFound):
        await store.update("t3", "crm", {"description": "x"}, "tester")
    with pytest.raises(NotFound):
        await store.delete("t3", "crm")

    async with store.engine.begin() as conn:  # t1's sealed headers copied onto t2's row do not open there
        sealed = await conn.scalar(
            sa.select(mcp_servers.c.headers).where(mcp_servers.c.tenant_id == "t1", mcp_servers.c.name == "crm")
        )
        assert MARKER.encode() not in bytes(sealed)
        await conn.execute(
            sa.update(mcp_servers)
            .where(mcp_servers.c.tenant_id == "t2", mcp_servers.c.name == "crm")
            .values(headers=sealed)
        )
    with pytest.raises(UnreadableRow, match="its headers cannot be opened"):  # a 409 naming it, not a 500
        await store.endpoint("t2", "crm")

    blob = await stored_bytes(store.engine, db_url)
    if not db_url.startswith("sqlite"):
        assert b"mcp_servers" in blob  # the dump is of this database
    assert MARKER.encode() not in blob


async def test_headers_are_sealed_again_on_change_and_removed_with_an_empty_set(store):
    await _add(store, "t1", "crm", {"X-Key": "old"})
    view = await store.update("t1", "crm", {"headers": {"X-Other": MARKER}, "url": "http://h:1/m"}, "someone")
    assert view.header_names == ["X-Other"] and view.url == "http://h:1/m" and view.updated_by == "someone"
    assert dict((await store.endpoint("t1", "crm")).headers) == {"X-Other": MARKER}
    assert (await store.update("t1", "crm", {"headers": {}}, "someone")).header_names == []
    assert dict((await store.endpoint("t1", "crm")).headers) == {}
    await store.delete("t1", "crm")
    assert await store.page("t1", 1000) == []


async def test_a_tenant_registers_at_most_max_servers_even_at_once(store, monkeypatch):
    """Registrations had no bound: a tenant's admin could register server after server (and every request naming
    a server by URL reads the tenant's). Counted and inserted under the tenant's lock, so registrations at once
    cannot all find room; other tenants' are not counted; a removed server frees its place."""
    from multihome.tools import servers

    monkeypatch.setattr(servers, "MAX_SERVERS_PER_TENANT", 3, raising=False)

    async def add(name: str):
        try:
            return await _add(store, "t1", name)
        except Invalid as exc:
            return exc

    done = await asyncio.gather(*(add(f"s{i}") for i in range(8)))
    refused = [d for d in done if isinstance(d, Invalid)]
    assert len(refused) == 5 and "the most a tenant may hold (3)" in str(refused[0])
    assert len(await store.page("t1", 1000)) == 3
    await _add(store, "t2", "s0")
    await store.delete("t1", (await store.page("t1", 1000))[0].name)
    await _add(store, "t1", "again")


async def test_servers_come_a_page_at_a_time_by_name(store):
    for name in ("e", "c", "a", "d", "b"):
        await _add(store, "t1", name)
    await _add(store, "t2", "z")
    first = await store.page("t1", 2)
    assert [s.name for s in first] == ["a", "b"] and first.more and first.last == "b"
    second = await store.page("t1", 2, first.last)
    assert [s.name for s in second] == ["c", "d"] and second.more
    last = await store.page("t1", 2, second.last)
    assert [s.name for s in last] == ["e"] and not last.more and last.last == "e"
    for bad in ("\x00a", "\ud800"):  # none the database could hold
        with pytest.raises(Invalid, match="is not the id of a row of this list"):
            await store.page("t1", 2, bad)
    # A name is its own place: another tenant's ("z", nothing of it shown) or a long one.
    assert [s.name for s in await store.page("t1", 2, "bb")] == ["c", "d"]
    assert list(await store.page("t1", 2, "z")) == list(await store.page("t1", 2, "x" * 10_000)) == []


async def test_a_walk_goes_on_past_a_server_deleted_between_pages(store):
    """Another admin removes the last server of the page a client has read: it was a 400, the walk ended."""
    for name in ("a", "b", "c", "d"):
        await _add(store, "t1", name)
    first = await store.page("t1", 2)
    await store.delete("t1", first.last)
    rest = await store.page("t1", 2, first.last)
    assert [s.name for s in rest] == ["c", "d"] and not rest.more
