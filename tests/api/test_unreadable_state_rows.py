"""Stored rows of usage, the stateful runtime and memory that the gateway cannot read: never a 500. SQLite
keeps any value in any column (a hand edit: a time that is not a time, a count that is not a number); on
both stores a sealed body may no longer open (copied from another row). Summaries leave such rows out and
name them under `unreadable`; a read of the one row answers 409 `unreadable_row`; the tenant's other rows
and every other tenant's calls are served (docs/storage.md "A row the gateway cannot read")."""

from __future__ import annotations

import httpx
import pytest

from admin_http import error, ok
from stored_app import STORES, StoredWorld, store_url, stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-unreadable-state"
T = "/admin/v1/tenants"
CHAT = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_UNREADABLE_STATE", ADMIN_KEY)


class World(StoredWorld):
    async def turn(self, key: str) -> dict:
        """What a tenant stores: a usage row, a stored response, a conversation, a memory record."""
        assert (await self.call("POST", "/v1/chat/completions", key, json=CHAT)).status_code == 200
        resp = await ok(
            await self.call("POST", "/v1/responses", key, json={"model": "g", "input": "hi", "store": True})
        )
        items = [{"type": "message", "role": "user", "content": "x"}]
        conv = await ok(await self.call("POST", "/v1/conversations", key, json={"items": items}))
        memory = {"agent_id": "a", "user_id": "u", "text": "hello world"}
        mem = await ok(await self.call("POST", "/v1/memory/records", key, json=memory))
        return {"resp": resp["id"], "conv": conv["id"], "mem": mem["id"]}


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    async with stored_app(url, "MH_TEST_UNREADABLE_STATE") as (client, app):
        yield World(client, url, ADMIN_KEY, app)


@pytest.fixture
async def sqlite_world(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/mh.db"
    async with stored_app(url, "MH_TEST_UNREADABLE_STATE") as (client, app):
        yield World(client, url, ADMIN_KEY, app)


def named(answer: dict, table: str, tenant: str) -> list[dict]:
    found = [u for u in answer.get("unreadable", []) if u["table"] == table]
    assert found and all(u["object"] == "unreadable_row" and u["tenant_id"] == tenant for u in found), answer
    return found


def unreadable(resp: httpx.Response, row_id: str) -> dict:
    err = error(resp, 409)
    assert err["code"] == "unreadable_row" and row_id in err["message"], err
    # The openai SDK retries every 409 unless told not to; the row reads the same on a retry.
    assert resp.headers["x-should-retry"] == "false"
    return err


async def test_sqlite_values_not_of_their_type_are_left_out_of_summaries_and_refused_by_reads(sqlite_world):
    w = sqlite_world
    acme, acme_key = await w.tenant("acme")
    other, other_key = await w.tenant("other")
    mine, theirs = await w.turn(acme_key), await w.turn(other_key)
    await ok(await w.call("GET", f"{T}/{acme}/usage"))  # the usage rows are written (it flushes them)
    for statement in (
        "UPDATE usage_calls SET latency_ms = 'slow', started_at = 'soon' WHERE tenant_id = :t",
        "UPDATE responses SET created_at = 'soon' WHERE tenant_id = :t",
        "UPDATE conversations SET created_at = 'soon', size = 'big' WHERE tenant_id = :t",
        "UPDATE memory_records SET created_at = 'soon' WHERE tenant_id = :t",
        "UPDATE memory_namespaces SET updated_at = 'soon' WHERE tenant_id = :t",
    ):
        await w.sql(statement, {"t": acme})

    # Summaries: the readable rows, the others named (on main each was a 500, for the org's too).
    usage = await ok(await w.call("GET", f"{T}/{acme}/usage"))
    assert usage["data"] == [] and "latency_ms" in named(usage, "usage_calls", acme)[0]["problem"]
    for query in ("", "?interval=hour", "?group_by=key"):
        org = await ok(await w.call("GET", f"/admin/v1/usage{query}"))
        assert org["data"] and named(org, "usage_calls", acme)
    state = await ok(await w.call("GET", f"{T}/{acme}/state"))
    assert state["responses"] == [] and state["conversations"]["count"] == 0
    assert {u["id"] for u in state["unreadable"]} == {mine["resp"], mine["conv"]}
    assert (await ok(await w.call("GET", "/admin/v1/state")))["responses"][0]["count"] == 1  # the other's
    spaces = await ok(await w.call("GET", f"{T}/{acme}/memory/namespaces"))
    assert named(spaces, "memory_records", acme)[0]["id"] == mine["mem"]
    listed = await ok(await w.call("GET", "/v1/memory/namespaces", acme_key))
    assert listed["data"] == [] and named(listed, "memory_namespaces", acme)

    # The rows themselves: 409 naming them (on main: 500s).
    unreadable(await w.call("GET", f"/v1/responses/{mine['resp']}", acme_key), mine["resp"])
    unreadable(await w.call("GET", f"/v1/responses/{mine['resp']}/input_items", acme_key), mine["resp"])
    unreadable(await w.call("GET", f"/v1/conversations/{mine['conv']}", acme_key), mine["conv"])
    unreadable(await w.call("GET", f"/v1/memory/records/{mine['mem']}", acme_key), mine["mem"])
    # A list or a search of records: the rest, and the record named (tests/api/test_memory_unreadable_records.py).
    records = await ok(await w.call("GET", "/v1/memory/records?agent_id=a&user_id=u", acme_key))
    assert records["data"] == [] and named(records, "memory_records", acme)[0]["id"] == mine["mem"]
    search = {"agent_id": "a", "user_id": "u", "query": "hello"}
    found = await ok(await w.call("POST", "/v1/memory/search", acme_key, json=search))
    assert found["data"] == [] and named(found, "memory_records", acme)[0]["id"] == mine["mem"]
    # ... and their deletes work (the mend).
    assert (await ok(await w.call("DELETE", f"/v1/responses/{mine['resp']}", acme_key)))["deleted"] is True
    assert (await ok(await w.call("DELETE", f"/v1/memory/records/{mine['mem']}", acme_key)))["deleted"] is True

    # The other tenant is served throughout.
    assert (await ok(await w.call("GET", f"{T}/{other}/usage")))["data"][0]["calls"] == 2  # its chat, its response
    assert "unreadable" not in await ok(await w.call("GET", f"{T}/{other}/state"))
    await ok(await w.call("GET", f"/v1/responses/{theirs['resp']}", other_key))
    await ok(await w.call("GET", f"/v1/conversations/{theirs['conv']}", other_key))
    await ok(await w.call("GET", f"/v1/memory/records/{theirs['mem']}", other_key))
    assert (await ok(await w.call("POST", "/v1/memory/search", other_key, json=search)))["data"]
    assert "unreadable" not in await ok(await w.call("GET", "/v1/memory/namespaces", other_key))


async def test_a_stored_response_sealed_for_another_row_is_a_409_not_a_500(world):
    w = world
    _, key = await w.tenant("acme")
    first, second = await w.turn(key), await w.turn(key)
    await w.sql(
        "UPDATE responses SET body = (SELECT body FROM responses WHERE id = :a) WHERE id = :b",
        {"a": first["resp"], "b": second["resp"]},
    )
    # (A chain this replica opened before is served from memory: the row is read by a get.)
    err = unreadable(await w.call("GET", f"/v1/responses/{second['resp']}", key), second["resp"])
    assert "its body cannot be opened" in err["message"]
    await ok(await w.call("GET", f"/v1/responses/{first['resp']}", key))  # its neighbour opens
    await w.sql(
        "UPDATE conversations SET body = (SELECT body FROM conversations WHERE id = :a) WHERE id = :b",
        {"a": first["conv"], "b": second["conv"]},
    )
    unreadable(await w.call("GET", f"/v1/conversations/{second['conv']}", key), second["conv"])
    await ok(await w.call("GET", f"/v1/conversations/{first['conv']}", key))
    assert (await ok(await w.call("DELETE", f"/v1/conversations/{second['conv']}", key)))["deleted"] is True


async def test_sqlite_sealed_bodies_stored_as_text_are_a_409_not_a_500(sqlite_world):
    """SQLite keeps text in a blob column: a sealed body stored as text is no envelope, so it does not open
    (a 409 naming the row, as any body that does not open) instead of a TypeError (a 500)."""
    w = sqlite_world
    acme, acme_key = await w.tenant("acme")
    mine = await w.turn(acme_key)
    for table in ("responses", "conversations", "conversation_items", "memory_records"):
        await w.sql(f"UPDATE {table} SET body = 'not a sealed record' WHERE tenant_id = :t", {"t": acme})
    unreadable(await w.call("GET", f"/v1/conversations/{mine['conv']}", acme_key), mine["conv"])
    err = error(await w.call("GET", f"/v1/conversations/{mine['conv']}/items", acme_key), 409)
    assert err["code"] == "unreadable_row" and mine["conv"] in err["message"], err
    assert error(await w.call("GET", f"/v1/memory/records/{mine['mem']}", acme_key), 409)["code"] == "unreadable_row"
    assert (await ok(await w.call("DELETE", f"/v1/conversations/{mine['conv']}", acme_key)))["deleted"] is True
    assert (await ok(await w.call("DELETE", f"/v1/memory/records/{mine['mem']}", acme_key)))["deleted"] is True


async def test_another_tenants_sealed_rows_copied_over_this_tenants_open_as_nothing(world):
    """A database writer copies acme's sealed bodies over other's rows: other's reads are a 409 naming its own
    row (WrongBinding: the data key is acme's), never acme's text; acme's rows still open."""
    w = world
    acme, acme_key = await w.tenant("acme")
    other, other_key = await w.tenant("other")
    mine, theirs = await w.turn(acme_key), await w.turn(other_key)
    for table, name in (("responses", "resp"), ("conversations", "conv"), ("memory_records", "mem")):
        copy = f"UPDATE {table} SET body = (SELECT body FROM {table} WHERE id = :a) WHERE id = :b"
        await w.sql(copy, {"a": mine[name], "b": theirs[name]})
    copy = "UPDATE conversation_items SET body = (SELECT body FROM conversation_items WHERE conversation_id = :a)"
    await w.sql(copy + " WHERE conversation_id = :b", {"a": mine["conv"], "b": theirs["conv"]})
    for path, row in (
        (f"/v1/responses/{theirs['resp']}", theirs["resp"]),
        (f"/v1/conversations/{theirs['conv']}", theirs["conv"]),
        (f"/v1/conversations/{theirs['conv']}/items", theirs["conv"]),
        (f"/v1/memory/records/{theirs['mem']}", theirs["mem"]),
    ):
        resp = await w.call("GET", path, other_key)
        assert "WrongBinding" in error(resp, 409)["message"] and row in resp.text and "hello" not in resp.text
    search = {"agent_id": "a", "user_id": "u", "query": "hello"}
    found = await ok(await w.call("POST", "/v1/memory/search", other_key, json=search))
    assert found["data"] == [] and named(found, "memory_records", other)[0]["id"] == theirs["mem"]
    assert (await ok(await w.call("GET", f"/v1/memory/records/{mine['mem']}", acme_key)))["text"] == "hello world"
    await ok(await w.call("GET", f"/v1/conversations/{mine['conv']}/items", acme_key))
