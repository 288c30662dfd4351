"""A PostgreSQL failover that leaves the gateway on a server that only reads (a standby, or a DNS name not yet
moved to the new primary): every write fails with SQLSTATE 25006 `read_only_sql_transaction`, reads work.
Played on a real PostgreSQL with `default_transaction_read_only` on the gateway's database and its sessions
ended, so every one of them reconnects read-only; then off again (the new primary reached). The app in
process with the official openai SDK: admin writes and stored Responses answer 503 `storage_unavailable`
(never 500, nothing written), reads answer, and every answered chat call's usage row is written once when
writes return (docs/storage.md "Outages")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from admin_http import error, ok
from multihome.simulators import Fault
from stored_app import agent_world, sdk_client, stored_world, until

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-read-only-database"
DEADLINE = 60  # seconds: a condition polled for (the usage writer's backoff is at most 5 s)


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_READ_ONLY", ADMIN_KEY)


@pytest.fixture
async def world(pg_database) -> AsyncIterator[tuple]:
    async with stored_world(pg_database(), "MH_TEST_READ_ONLY", ADMIN_KEY) as (world, sim, transport):
        world.sim = sim
        yield world, transport


async def read_only(url: str, on: bool) -> None:
    """The gateway's database read-only (a standby) or not (the primary): its new sessions take the setting,
    and its existing ones are ended so the gateway's pools reconnect to the server as it now is."""
    base, db = url.replace("postgresql+asyncpg", "postgresql").rsplit("/", 1)
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        await conn.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = {"on" if on else "off"}')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", db
        )
    finally:
        await conn.close()


async def scalar(url: str, query: str):
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(query))).scalar()
    finally:
        await engine.dispose()


async def usage_rows(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text("SELECT request_id FROM usage_calls"))).scalars())
    finally:
        await engine.dispose()


def unavailable_503(resp) -> None:
    body = error(resp, 503)
    assert body["code"] == "storage_unavailable" and body["type"] == "server_error", body
    assert resp.headers.get("retry-after"), resp.headers


async def test_a_read_only_database_is_an_outage_and_nothing_is_lost(world, caplog):
    world, transport = world
    tid, key = await world.tenant("ro")
    await ok(await world.call("GET", "/admin/v1/tenants"))
    chat = sdk_client(key, transport)
    conv = (await ok(await world.call("POST", "/v1/conversations", key, json={})))["id"]
    writes = [  # one of each kind of write a client or an operator makes: none may answer 500 nor half-write
        (f"/admin/v1/tenants/{tid}/keys", {"name": "k2", "roles": ["member"]}),
        (f"/admin/v1/tenants/{tid}/budgets", {"scope": "tenant", "scope_id": tid, "amount": "10", "period": "day"}),
        (f"/admin/v1/tenants/{tid}/mcp-servers", {"name": "tools", "url": "http://mcp.invalid/mcp"}),
    ]
    state_writes = [
        (f"/v1/conversations/{conv}/items", {"items": [{"role": "user", "content": "later"}]}),
        ("/v1/memory/records", {"agent_id": "a", "user_id": "u", "text": "remember me"}),
    ]
    await read_only(world.url, True)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        # Reads still answer (the first, perhaps, after the pool notices its ended connection).
        async def listed():
            resp = await world.client.get("/admin/v1/tenants", headers={"authorization": f"Bearer {ADMIN_KEY}"})
            return resp.status_code == 200 and resp

        assert any(
            t["id"] == tid for t in (await until(listed, "reads answer while read-only", DEADLINE)).json()["data"]
        )
        unavailable_503(await world.client.post("/admin/v1/tenants", json={"name": "later"}, headers=_admin()))
        for path, body in writes:
            unavailable_503(await world.client.post(path, json=body, headers=_admin()))
        for path, body in state_writes:
            unavailable_503(await world.client.post(path, json=body, headers=_bearer(key)))
        answered = []
        for i in range(5):  # chat calls are answered; their usage rows wait for the database
            done = await chat.chat.completions.with_raw_response.create(
                model="g", messages=[{"role": "user", "content": f"hi {i}"}]
            )
            answered.append(done.headers["x-request-id"])
        stored = await world.client.post(
            "/v1/responses", json={"model": "g", "input": "keep me", "store": True}, headers=_bearer(key)
        )
        unavailable_503(stored)
        unavailable_503(await world.client.post("/v1/conversations", json={}, headers=_bearer(key)))
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [
            r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info
        ]
    names = [t["name"] for t in (await ok(await world.call("GET", "/admin/v1/tenants")))["data"]]
    assert "later" not in names  # nothing half-written
    assert [k["name"] for k in (await ok(await world.call("GET", f"/admin/v1/tenants/{tid}/keys")))["data"]] == ["k"]
    assert not (await ok(await world.call("GET", f"/admin/v1/tenants/{tid}/budgets")))["data"]
    assert not (await ok(await world.call("GET", f"/admin/v1/tenants/{tid}/mcp-servers")))["data"]
    assert len((await ok(await world.call("GET", f"/v1/conversations/{conv}/items", key)))["data"]) == 0
    await read_only(world.url, False)

    async def all_written():
        rows = await usage_rows(world.url)
        return set(answered) <= set(rows) and rows

    rows = await until(all_written, "every answered call's usage row written once writes return", DEADLINE)
    assert sorted(r for r in rows if r in answered) == sorted(answered)  # none twice
    await ok(await world.call("POST", "/admin/v1/tenants", json={"name": "later"}), 201)  # writes work again


async def test_a_usage_summary_while_rows_wait_for_the_database_is_a_503_at_once(world, caplog):
    # It flushed this replica's rows first, waiting 30 s for a database that takes no writes, then answered 503.
    world, transport = world
    _, key = await world.tenant("summary")
    chat = sdk_client(key, transport)
    await read_only(world.url, True)
    with caplog.at_level(logging.WARNING):
        answered = await chat.chat.completions.with_raw_response.create(
            model="g", messages=[{"role": "user", "content": "count me"}]
        )

        async def waiting():
            return any("usage rows not written" in r.getMessage() for r in caplog.records)

        await until(waiting, "the usage writer meeting the read-only database", DEADLINE)
        summary = await asyncio.wait_for(world.client.get("/admin/v1/usage", headers=_admin()), 15)  # Retry-After: 5
    unavailable_503(summary)
    await read_only(world.url, False)

    async def counted():
        resp = await world.client.get("/admin/v1/usage", headers=_admin())  # a 503 until the rows are written
        return resp.status_code == 200 and sum(row["calls"] for row in resp.json()["data"]) >= 1

    await until(counted, "the summary counting the call once writes return", DEADLINE)
    assert answered.headers["x-request-id"] in await usage_rows(world.url)


def _admin() -> dict:
    return _bearer(ADMIN_KEY)


def _bearer(key: str) -> dict:
    return {"authorization": f"Bearer {key}"}


async def test_a_background_turn_under_way_when_writes_stop_is_finished_once_when_they_return(world, caplog):
    """Its events, lease renewals and final record cannot be written while the database is read-only: the turn
    is not lost (it completes once writes return) and its upstream call is made and billed once."""
    world, transport = world
    _, key = await world.tenant("bg")
    sim = world.sim
    sim.state.faults.add(Fault(chunk_delay_ms=100, chunks=30, times=1))  # ~3 s: under way at the switch
    client = sdk_client(key, transport)
    body = {"model": "g", "input": "a long one", "background": True, "stream": True}  # its events persisted

    async def follow() -> None:  # (the in-process transport hands the stream over only when it has ended)
        await world.client.post("/v1/responses", json=body, headers=_bearer(key))

    follower = asyncio.create_task(follow())

    async def running():
        return await scalar(world.url, "SELECT id FROM responses WHERE status = 'in_progress'")

    rid = await until(running, "the turn under way", DEADLINE)
    await read_only(world.url, True)
    with caplog.at_level(logging.WARNING):
        await asyncio.sleep(6)  # past the upstream's answer: its record waits for writes
        await read_only(world.url, False)

        async def final():
            got = await client.responses.retrieve(rid)
            return got.status in ("completed", "failed", "cancelled", "incomplete") and got

        done = await until(final, "the turn finished once writes return", 3 * DEADLINE)
    assert done.status == "completed", done
    await follower
    assert sim.state.stats.requests == 1, "the turn's upstream call was made once"
    rows = await until(lambda: usage_rows(world.url), "its usage row written", DEADLINE)
    assert len(rows) == 1, rows  # billed once
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.fixture
async def agents(pg_database, tmp_path) -> AsyncIterator[tuple]:
    async with agent_world(pg_database(), tmp_path, "MH_TEST_READ_ONLY", ADMIN_KEY) as world:
        yield world


async def test_an_agent_run_whose_step_cannot_be_checkpointed_waits_and_repeats_nothing(agents, caplog):
    """A step done (its model call made) while the database takes no writes: its checkpoint waits for writes
    rather than raising (the job would run the step again, the model called twice); the run completes once."""
    w, sim, transport, server = agents
    tenant, key = await w.tenant("acme")
    body = {"name": "tools", "url": server.url, "allowed_tools": ["record"], "require_approval": "never"}
    await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/mcp-servers", json=body), 201)
    sim.state.faults.add(Fault(latency_ms=2000, times=1))  # the first step's model call: under way at the switch
    sdk = sdk_client(key, transport)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["record"]}
    created = await sdk.responses.create(model="g", input="steps=2", tools=[tool], background=True)

    async def asked():
        return sim.state.stats.requests >= 1

    await until(asked, "the first step's model call", DEADLINE)
    await read_only(w.url, True)
    with caplog.at_level(logging.WARNING):
        await asyncio.sleep(5)  # past the model's answer: the step's checkpoint waits for writes
        await read_only(w.url, False)

        async def final():
            got = await sdk.responses.retrieve(created.id)
            return got if got.status not in ("queued", "in_progress") else None

        done = await until(final, "the run ended once writes return", 3 * DEADLINE)
    await sdk.close()
    assert done.status == "completed", (done.status, done.error)
    calls = [i for i in done.output if i.type == "mcp_call"]
    assert calls and len(server.calls) == len(calls), server.calls  # each tool called once
    assert sim.state.stats.requests == len(calls) + 1, "one model call per step and one for the answer"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
