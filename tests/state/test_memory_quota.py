"""A tenant's memory records at most (`memory.per_tenant`, state/tenant_quota.py), on SQLite and PostgreSQL: a
write past the tenant's count or bytes is refused with nothing written, another tenant is not held by it, a
delete, a forgotten user and a TTL sweep make room, and the memory tool tells the model its write was refused
(a failed item, not a failed run)."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest

from multihome.config.memory import MemoryConfig
from multihome.crypto import open_keyring
from multihome.state.memory import MemoryStore, NewRecord
from multihome.state.memory.tools import MemoryTools, parse_tool
from multihome.state.tenant_quota import TenantStorageFull
from multihome.storage.engine import create_engine

from .test_memory import embedder

pytestmark = pytest.mark.anyio


@pytest.fixture
async def limited(db_url, kms_config):
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    limits = msgspec.convert({"per_tenant": {"max_records": 3}, "tenants": {"small": {"max_bytes": 1}}}, MemoryConfig)
    store = MemoryStore(engine, keyring, embedder, limits=limits)
    yield store
    await store.close()
    await keyring.close()
    await engine.dispose()


def _records(*texts: str, ttl_s: int | None = None) -> list[NewRecord]:
    return [NewRecord(t, {}, ttl_s) for t in texts]


async def test_a_tenant_past_its_records_is_refused_with_nothing_written_until_room_is_made(limited):
    first = await limited.write("t1", "bot", "u1", _records("one", "two"))
    with pytest.raises(TenantStorageFull) as err:
        await limited.write("t1", "bot", "u2", _records("three", "four"))
    assert (err.value.what, err.value.limit, err.value.would) == ("count", 3, 4)
    assert (await limited.tenant_totals("t1"))[0] == 2  # nothing of the two written
    await limited.write("t1", "bot", "u2", _records("three"))
    await limited.write("t2", "bot", "u1", _records("another tenant's", "own", "three"))
    with pytest.raises(TenantStorageFull):
        await limited.write("t1", "bot", "u1", _records("four"))
    assert await limited.delete("t1", first[0].id)  # a delete makes room at once
    await limited.write("t1", "bot", "u1", _records("four"))
    assert await limited.forget_user("t1", "u2") == (1, 1)  # so does forgetting a user
    await limited.write("t1", "bot", "u1", _records("five"))
    with pytest.raises(TenantStorageFull):  # bytes: a tenant of its own
        await limited.write("small", "bot", "u1", _records("x"))


async def test_a_sweep_of_expired_records_makes_room(limited):
    await limited.write("t1", "bot", "u1", _records("a", "b", "c", ttl_s=1))
    with pytest.raises(TenantStorageFull):
        await limited.write("t1", "bot", "u1", _records("d"))
    deadline = time.monotonic() + 30
    while await limited.sweep() < 3:
        assert time.monotonic() < deadline, "the expired records were never swept"
        await asyncio.sleep(0.2)
    await limited.write("t1", "bot", "u1", _records("d"))


async def test_the_memory_tool_tells_the_model_its_write_was_refused(limited):
    await limited.write("t1", "bot", "u1", _records("a", "b", "c"))
    tools = MemoryTools(limited, "t1", parse_tool({"type": "memory", "agent_id": "bot", "user_id": "u1"}))
    item = {"type": "mcp_call", "id": "mcp_1", "server_label": "memory", "name": "memory_write"}
    done = await tools.call({**item, "arguments": json.dumps({"text": "one too many"})}, "resp_1/1/mcp_1")
    assert done["status"] == "failed" and done["output"] is None
    assert "memory.per_tenant.max_records" in json.dumps(done["error"]), done["error"]


async def test_deletes_make_room_without_reading_the_tenants_totals_again(limited):
    reads = []
    read = limited.quota._read

    async def counted(tenant: str) -> tuple[int, int]:
        reads.append(tenant)
        return await read(tenant)

    limited.quota._read = counted
    first = await limited.write("t1", "bot", "u1", _records("one", "two", "three"))
    for i in range(3):  # a tenant at its limit deleting and writing in turn: no aggregate each write
        with pytest.raises(TenantStorageFull):
            await limited.write("t1", "bot", "u2", _records("more"))
        if i == 0:
            assert await limited.delete("t1", first[0].id)
            await limited.write("t1", "bot", "u2", _records("four"))
        elif i == 1:
            assert await limited.forget_user("t1", "u2") == (1, 1)
            await limited.write("t1", "bot", "u3", _records("five"))
        else:
            assert await limited.delete_namespace("t1", "bot", "u3") == 1
            await limited.write("t1", "bot", "u4", _records("six"))
    assert reads == ["t1"]
    assert (await limited.tenant_totals("t1"))[0] == 3


async def test_a_tenant_holds_at_most_max_namespaces_even_made_at_once(db_url, kms_config):
    """A namespace stays when its records go (its TTL with it), so writing a record to a new namespace and deleting
    it grew the table by a row each time, within any record limit. Past `max_namespaces` a new one is refused
    (a write or a TTL set); the tenant's namespaces go on taking records, another tenant is not held by it, and a
    deleted namespace makes room. Counted under the tenant's lock: namespaces made at once cannot all find room."""
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    limits = msgspec.convert({"per_tenant": {"max_namespaces": 2}}, MemoryConfig)
    store = MemoryStore(engine, keyring, embedder, limits=limits)
    try:
        made = await store.write("t1", "bot", "u1", _records("one"))
        assert await store.delete("t1", made[0].id)  # its namespace stays
        await store.set_namespace("t1", "bot", "u2", 60)
        for refused in (store.write("t1", "bot", "u3", _records("x")), store.set_namespace("t1", "bot", "u3", 60)):
            with pytest.raises(TenantStorageFull) as err:
                await refused
            assert (err.value.what, err.value.limit, err.value.would) == ("namespaces", 2, 3)
        await store.write("t1", "bot", "u1", _records("two"))  # its own namespaces take records
        await store.write("t2", "bot", "u3", _records("another tenant's"))
        assert await store.delete_namespace("t1", "bot", "u2") == 0
        await store.write("t1", "bot", "u3", _records("room again"))

        async def make(user: str) -> object:
            try:
                return await store.set_namespace("t3", "bot", user, None)
            except TenantStorageFull as exc:
                return exc

        done = await asyncio.gather(*(make(f"u{i}") for i in range(6)))
        assert sum(isinstance(d, TenantStorageFull) for d in done) == 4
        assert len(await store.namespaces("t3", 1000)) == 2
    finally:
        await store.close()
        await keyring.close()
        await engine.dispose()


async def test_the_memory_tool_names_the_namespace_limit(db_url, kms_config):
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    store = MemoryStore(
        engine, keyring, embedder, limits=msgspec.convert({"per_tenant": {"max_namespaces": 1}}, MemoryConfig)
    )
    try:
        await store.set_namespace("t1", "bot", "u0", None)
        tools = MemoryTools(store, "t1", parse_tool({"type": "memory", "agent_id": "bot", "user_id": "u1"}))
        item = {"type": "mcp_call", "id": "mcp_1", "server_label": "memory", "name": "memory_write"}
        done = await tools.call({**item, "arguments": json.dumps({"text": "a new namespace"})}, "resp_1/1/mcp_1")
        assert done["status"] == "failed" and "memory.per_tenant.max_namespaces" in json.dumps(done["error"])
    finally:
        await store.close()
        await keyring.close()
        await engine.dispose()
