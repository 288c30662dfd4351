"""A memory record the gateway cannot read (its body sealed for another row: a hand copy, on SQLite and
PostgreSQL; a value the driver cannot decode, SQLite): the records list and a search return the rest and
name it under `unreadable` (table, id, tenant, problem; never a stored value), as the other lists do; a get
of it is a 409 `unreadable_row`; deleting it works, and mends both. On main a page holding it, and every
search of its namespace, answered 409."""

from __future__ import annotations

import pytest

from admin_http import error, ok
from stored_app import STORES, StoredWorld, store_url, stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-unreadable-memory"
RECORDS = "/v1/memory/records"
NS = "agent_id=a&user_id=u"
SEARCH = {"agent_id": "a", "user_id": "u", "query": "hello"}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_UNREADABLE_MEMORY", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    async with stored_app(url, "MH_TEST_UNREADABLE_MEMORY") as (client, app):
        yield StoredWorld(client, url, ADMIN_KEY, app)


async def _records(w: StoredWorld, key: str, n: int) -> list[str]:
    out = []
    for i in range(n):
        body = {"agent_id": "a", "user_id": "u", "text": f"hello world {i}", "metadata": {"i": i}}
        out.append((await ok(await w.call("POST", RECORDS, key, json=body)))["id"])
    return out


def _named(answer: dict, record_id: str, tenant: str) -> dict:
    (u,) = answer["unreadable"]
    assert u == {
        "object": "unreadable_row",
        "table": "memory_records",
        "id": record_id,
        "tenant_id": tenant,
        "problem": u["problem"],
    }, answer
    assert "hello" not in u["problem"], u  # never a stored value
    return u


async def _pages(w: StoredWorld, key: str, limit: int, order: str = "desc") -> tuple[list[str], list[str]]:
    """Every page of the namespace's list: the ids served, and the ids named unreadable."""
    seen: list[str] = []
    named: list[str] = []
    after = ""
    for _ in range(20):  # bounded: a page that did not move on would loop
        page = await ok(await w.call("GET", f"{RECORDS}?{NS}&limit={limit}&order={order}{after}", key))
        seen += [r["id"] for r in page["data"]]
        named += [u["id"] for u in page.get("unreadable", [])]
        if not page["has_more"]:
            return seen, named
        after = f"&after={page['last_id']}"
    raise AssertionError("the list did not end")


async def _check(w: StoredWorld, tenant: str, key: str, ids: list[str], bad: str, problem: str) -> None:
    good = [i for i in ids if i != bad]
    listed = await ok(await w.call("GET", f"{RECORDS}?{NS}", key))  # on main: 409 for the whole page
    assert sorted(r["id"] for r in listed["data"]) == sorted(good)
    assert problem in _named(listed, bad, tenant)["problem"]
    for order in ("desc", "asc"):  # pages of one: each record once, the bad one named where it stands
        seen, named = await _pages(w, key, 1, order)
        assert sorted(seen) == sorted(good) and named == [bad], (order, seen, named)
    found = await ok(await w.call("POST", "/v1/memory/search", key, json=SEARCH))  # on main: 409
    assert sorted(h["id"] for h in found["data"]) == sorted(good)
    _named(found, bad, tenant)
    err = error(await w.call("GET", f"{RECORDS}/{bad}", key), 409)
    assert err["code"] == "unreadable_row" and bad in err["message"], err
    for rid in good:
        await ok(await w.call("GET", f"{RECORDS}/{rid}", key))

    assert (await ok(await w.call("DELETE", f"{RECORDS}/{bad}", key)))["deleted"] is True  # the mend
    listed = await ok(await w.call("GET", f"{RECORDS}?{NS}", key))
    assert "unreadable" not in listed and len(listed["data"]) == len(good)
    found = await ok(await w.call("POST", "/v1/memory/search", key, json=SEARCH))
    assert "unreadable" not in found and len(found["data"]) == len(good)
    error(await w.call("GET", f"{RECORDS}/{bad}", key), 404)


async def test_a_record_sealed_for_another_row_is_named_beside_the_list_and_the_search(world):
    w = world
    tenant, key = await w.tenant("acme")
    ids = await _records(w, key, 4)
    await w.sql(
        "UPDATE memory_records SET body = (SELECT body FROM memory_records WHERE id = :a) WHERE id = :b",
        {"a": ids[0], "b": ids[2]},
    )
    await _check(w, tenant, key, ids, ids[2], "its body cannot be opened")


async def test_a_value_the_driver_cannot_decode_is_named_beside_the_list_and_the_search(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/mh.db"
    async with stored_app(url, "MH_TEST_UNREADABLE_MEMORY") as (client, app):
        w = StoredWorld(client, url, ADMIN_KEY, app)
        tenant, key = await w.tenant("acme")
        ids = await _records(w, key, 4)
        await w.sql("UPDATE memory_records SET created_at = 'soon' WHERE id = :b", {"b": ids[1]})
        await _check(w, tenant, key, ids, ids[1], "")


async def test_a_record_mended_by_sql_joins_the_search_again(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/mh.db"
    async with stored_app(url, "MH_TEST_UNREADABLE_MEMORY") as (client, app):
        w = StoredWorld(client, url, ADMIN_KEY, app)
        tenant, key = await w.tenant("acme")
        ids = await _records(w, key, 3)
        await w.sql("UPDATE memory_records SET created_at = 'soon' WHERE id = :b", {"b": ids[1]})
        found = await ok(await w.call("POST", "/v1/memory/search", key, json=SEARCH))
        assert len(found["data"]) == 2 and _named(found, ids[1], tenant)
        await w.sql(
            "UPDATE memory_records SET created_at = (SELECT created_at FROM memory_records WHERE id = :a) "
            "WHERE id = :b",
            {"a": ids[0], "b": ids[1]},
        )
        found = await ok(await w.call("POST", "/v1/memory/search", key, json=SEARCH))
        assert "unreadable" not in found and sorted(h["id"] for h in found["data"]) == sorted(ids)
