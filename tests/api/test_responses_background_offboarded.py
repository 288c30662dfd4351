"""A background response whose tenant is deleted (offboarded) before its run starts is not run: the run acts
as the principal stored with the response (no credential is checked again), and deleting a tenant deletes its
keys and budgets but not its queued responses, so the run would call the upstream for a tenant that no longer
exists, with no budget left to stop it, and nobody could cancel it (the tenant's keys are gone). The run is
failed instead (403 `unknown_tenant`), without an upstream call or a usage row. The same for a tenant whose
stored rows cannot be read (its calls are refused until an operator mends the row: docs/storage.md), and for
a response whose API key is revoked before its run, or its next agent step (401 `invalid_api_key`), or whose
OIDC token is revoked (401 `token_revoked`). An agent run whose MCP server registration is deleted meanwhile
makes no further call to it (each later call fails, not made, for the model to read).

The official openai SDK against the app in process (SQLite and PostgreSQL), one simulated upstream; the job's
start is held by a gate until the tenant is gone, so nothing here depends on timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from admin_http import ok
from builders import database, identity, oidc, simulated, single
from multihome.api.responses.background import Background
from multihome.simulators import SimulatorConfig, start_simulator
from multihome.state.service import StateService
from multihome.storage.service import StorageService
from multihome.tools.toolbox import Toolbox
from oidc_issuer import LocalIssuer
from stored_app import STORES, StoredWorld, sdk_client, served, store_url, stored_world
from stored_app import agent_world as stored_agent_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-offboarded-runs"
DEADLINE = 60  # seconds: a condition polled for


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_BG_OFFBOARD", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_world(
        store_url(request, tmp_path),
        "MH_TEST_BG_OFFBOARD",
        ADMIN_KEY,
        deployment_fields={"price": {"input": 1, "output": 2}},
    ) as (world, sim, transport):
        yield world, sim, transport


def _gate_runs(app) -> asyncio.Event:
    """Hold every background run at its start until the returned event is set."""
    (background,) = [s for s in app.services if isinstance(s, Background)]
    assert background.worker is not None
    handlers = background.worker.handlers
    run, gate = handlers["response"], asyncio.Event()

    async def gated(job):
        await gate.wait()
        return await run(job)

    handlers["response"] = gated
    return gate


async def _final(app, tenant: str, response_id: str):
    (state,) = [s for s in app.services if isinstance(s, StateService)]
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:
        record = await state.store.get_response(tenant, response_id)
        assert record is not None
        if record.status not in ("queued", "in_progress"):
            return record
        assert asyncio.get_running_loop().time() < deadline, f"the response stayed {record.status}"
        await asyncio.sleep(0.05)


async def _queued(w: StoredWorld, transport, name: str) -> tuple[str, str, str]:
    """A tenant, and a background response of it queued (its run held by the gate): (tenant, key, response id)."""
    tenant, key = await w.tenant(name)
    await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/budgets", json={"scope": "tenant", "amount": "1"}), 201)
    sdk = sdk_client(key, transport)
    created = await sdk.responses.create(model="g", input="hello", background=True, max_output_tokens=16)
    assert created.status == "queued"
    await sdk.close()
    return tenant, key, created.id


async def test_a_deleted_tenants_queued_background_response_is_failed_not_run(world):
    w, sim, transport = world
    gate = _gate_runs(w.app)
    tenant, key, response_id = await _queued(w, transport, "leaving")
    await ok(await w.call("DELETE", f"/admin/v1/tenants/{tenant}"))
    refused = await w.client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
    assert refused.status_code == 401  # its keys are gone

    gate.set()
    record = await _final(w.app, tenant, response_id)
    # Before the fix: `completed`, served by the upstream as a tenant that no longer exists, with no budget.
    assert record.status == "failed", record.status
    assert "deleted" in record.response["error"]["message"], record.response["error"]
    assert sim.state.stats.requests == 0, "the run called the upstream"
    usage = await ok(await w.call("GET", "/admin/v1/usage", params={"group_by": "tenant"}))
    assert not [row for row in usage["data"] if row.get("tenant_id") == tenant and row["calls"]], usage


async def test_a_tenant_whose_rows_cannot_be_read_has_its_background_run_refused(world):
    w, sim, transport = world
    gate = _gate_runs(w.app)
    tenant, _, response_id = await _queued(w, transport, "broken")
    # An operator's edit leaves the tenant's budget row unreadable: its calls are refused (it may hold a limit).
    await w.sql("UPDATE budgets SET amount = 'lots' WHERE tenant_id = :t", {"t": tenant})
    await w.sql("UPDATE state_version SET version = version + 1 WHERE id = 1")  # every replica reloads
    (storage,) = [s for s in w.app.services if isinstance(s, StorageService)]
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while tenant not in storage.refused:
        assert asyncio.get_running_loop().time() < deadline, "the tenant was never refused"
        await asyncio.sleep(0.05)

    gate.set()
    record = await _final(w.app, tenant, response_id)
    assert record.status == "failed", record.status
    assert "cannot be read" in record.response["error"]["message"], record.response["error"]
    assert sim.state.stats.requests == 0, "the run called the upstream"


@pytest.fixture(params=STORES)
async def agent_world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_agent_world(store_url(request, tmp_path), tmp_path, "MH_TEST_BG_OFFBOARD", ADMIN_KEY) as world:
        yield world


async def _held_agent_run(w: StoredWorld, transport, server, tenant: str, key: str) -> tuple[str, asyncio.Event]:
    """A background agent run on a registered MCP server, held at its checkpoint after its first tool call
    (the third write: in_progress, the model's step, the call): its next step is its second model call.
    The run's id, and the event that lets it go on."""
    servers = f"/admin/v1/tenants/{tenant}/mcp-servers"
    body = {"name": "tools", "url": server.url, "allowed_tools": ["record"], "require_approval": "never"}
    await ok(await w.call("POST", servers, json=body), 201)
    (background,) = [s for s in w.app.services if isinstance(s, Background)]
    assert background.store is not None
    progress, writes, held = background.store.progress, [], asyncio.Event()

    async def holding(*args, **kwargs):
        done = await progress(*args, **kwargs)
        writes.append(1)
        if len(writes) == 3:
            await held.wait()
        return done

    background.store.progress = holding
    sdk = sdk_client(key, transport)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["record"]}
    created = await sdk.responses.create(model="g", input="steps=3", tools=[tool], background=True)
    await sdk.close()
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while len(writes) < 3:
        assert asyncio.get_running_loop().time() < deadline, f"the run made {len(writes)} checkpoints"
        await asyncio.sleep(0.05)
    return created.id, held


async def test_an_agent_run_stops_at_its_next_model_step_once_its_tenant_is_deleted(agent_world):
    w, sim, transport, server = agent_world
    tenant, key = await w.tenant("leaving")
    created, held = await _held_agent_run(w, transport, server, tenant, key)
    assert sim.state.stats.requests == 1  # one model step (and its tool call)
    await ok(await w.call("DELETE", f"/admin/v1/tenants/{tenant}"))

    held.set()
    record = await _final(w.app, tenant, created)
    # Before the fix: the run went on for its three steps, calling the model as a tenant that is gone.
    assert record.status == "failed", record.status
    assert "deleted" in record.response["error"]["message"], record.response["error"]
    assert sim.state.stats.requests == 1, "the run called the model again"


async def test_a_foreground_agent_run_stops_at_its_next_model_step_once_its_key_is_revoked(agent_world, monkeypatch):
    """A foreground run is one request, yet each step is a new model call: a key revoked while the run is at a
    tool call gets no further one (the run ends `failed` saying why), as every other request of it is refused."""
    w, sim, transport, server = agent_world
    tenant, key = await w.tenant("acme")
    servers = f"/admin/v1/tenants/{tenant}/mcp-servers"
    body = {"name": "tools", "url": server.url, "allowed_tools": ["record"], "require_approval": "never"}
    await ok(await w.call("POST", servers, json=body), 201)
    key_id = (await ok(await w.call("GET", f"/admin/v1/tenants/{tenant}/keys")))["data"][0]["id"]
    entered, held = asyncio.Event(), asyncio.Event()
    call = Toolbox.call

    async def holding(self, *args, **kwargs):  # the first tool call waits, done, until the key is revoked
        done = await call(self, *args, **kwargs)
        if not entered.is_set():
            entered.set()
            await held.wait()
        return done

    monkeypatch.setattr(Toolbox, "call", holding)
    sdk = sdk_client(key, transport, timeout=60)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["record"]}
    run = asyncio.create_task(sdk.responses.create(model="g", input="steps=3", tools=[tool]))
    await asyncio.wait_for(entered.wait(), DEADLINE)
    assert sim.state.stats.requests == 1
    await ok(await w.call("DELETE", f"/admin/v1/tenants/{tenant}/keys/{key_id}"))

    held.set()
    done = await asyncio.wait_for(run, DEADLINE)
    await sdk.close()
    # Before the fix: `completed` after three model calls, two of them made after the key was revoked.
    assert done.status == "failed", done.status
    assert done.error is not None and "revoked" in done.error.message, done.error
    assert sim.state.stats.requests == 1, "the run called the model again"
    assert [i.type for i in done.output] == ["mcp_list_tools", "mcp_call"]


async def _key_id(w: StoredWorld, tenant: str) -> str:
    return (await ok(await w.call("GET", f"/admin/v1/tenants/{tenant}/keys")))["data"][0]["id"]


async def test_a_queued_background_response_whose_key_is_revoked_is_failed_not_run(world):
    """A key revoked (a leaked one, say) stops what it queued: its holder could otherwise keep spending the
    tenant's budget through up to max_open_per_tenant background responses after the revocation."""
    w, sim, transport = world
    gate = _gate_runs(w.app)
    tenant, key, response_id = await _queued(w, transport, "leaky")
    await ok(await w.call("DELETE", f"/admin/v1/tenants/{tenant}/keys/{await _key_id(w, tenant)}"))
    refused = await w.client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
    assert refused.status_code == 401  # the key's own requests are refused at once

    gate.set()
    record = await _final(w.app, tenant, response_id)
    # Before the fix: `completed`, served by the upstream for a key revoked before its run began.
    assert record.status == "failed", record.status
    assert "revoked" in record.response["error"]["message"], record.response["error"]
    assert sim.state.stats.requests == 0, "the run called the upstream"


async def test_a_background_agent_run_stops_at_its_next_model_step_once_its_key_is_revoked(agent_world):
    w, sim, transport, server = agent_world
    tenant, key = await w.tenant("acme")
    created, held = await _held_agent_run(w, transport, server, tenant, key)
    assert sim.state.stats.requests == 1  # one model step (and its tool call)
    await ok(await w.call("DELETE", f"/admin/v1/tenants/{tenant}/keys/{await _key_id(w, tenant)}"))

    held.set()
    record = await _final(w.app, tenant, created)
    # Before the fix: the run went on for its three steps, calling the model and the tool for a revoked key.
    assert record.status == "failed", record.status
    assert "revoked" in record.response["error"]["message"], record.response["error"]
    assert sim.state.stats.requests == 1, "the run called the model again"
    assert len(server.calls) == 1, server.calls


@pytest.fixture(params=STORES)
async def sso_world(request, tmp_path) -> AsyncIterator[tuple]:
    """The app trusting a local OIDC issuer (tests/oidc_issuer.py), one simulated upstream."""
    url = store_url(request, tmp_path)
    sim = await start_simulator(SimulatorConfig(kind="openai", name="up"))
    with LocalIssuer() as idp:
        cfg = single(
            simulated("openai", sim.url, region="us-east-1", data_zone="US"),
            storage=database(url, refresh_s=0.05),
            identity=identity("MH_TEST_BG_OFFBOARD", oidc(idp)),
        )
        try:
            async with served(cfg) as (client, transport, app):
                yield StoredWorld(client, url, ADMIN_KEY, app), sim, transport, idp
        finally:
            await sim.close()


async def test_a_queued_background_response_whose_oidc_token_is_revoked_is_failed_not_run(sso_world):
    w, sim, transport, idp = sso_world
    gate = _gate_runs(w.app)
    tenant = (await ok(await w.call("POST", "/admin/v1/tenants", json={"name": "sso"}), 201))["id"]
    token = idp.mint(sub="alice", tenant=tenant, jti="jti-alice-1")
    sdk = sdk_client(token, transport)
    created = await sdk.responses.create(model="g", input="hello", background=True, max_output_tokens=16)
    await sdk.close()
    assert created.status == "queued"
    body = {"kind": "jti", "issuer": "local", "jti": "jti-alice-1", "tenant_id": tenant}
    await ok(await w.call("POST", "/admin/v1/token-revocations", json=body), 201)
    refused = await w.client.get("/v1/models", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 401  # the token's own requests are refused at once
    (state,) = [s for s in w.app.services if isinstance(s, StateService)]
    queued = await state.store.get_response(tenant, created.id)
    assert queued is not None and queued.background is not None

    gate.set()
    record = await _final(w.app, tenant, created.id)
    # Before the fix: `completed`, served by the upstream for a token revoked before its run began.
    assert record.status == "failed", record.status
    assert "revoked" in record.response["error"]["message"], record.response["error"]
    assert sim.state.stats.requests == 0, "the run called the upstream"
    # What the run keeps of the token: its issuer, jti and iat, never the token.
    assert token not in repr(queued.background) and queued.background["token"]["jti"] == "jti-alice-1"


async def test_an_agent_run_makes_no_further_call_to_an_mcp_server_deleted_meanwhile(agent_world):
    """An admin removes a registration (a compromised server, say): the route says requests can no longer
    reach it, and a run that resolved it before (for up to its hour and 50 calls) is no exception."""
    w, sim, transport, server = agent_world
    tenant, key = await w.tenant("acme")
    servers = f"/admin/v1/tenants/{tenant}/mcp-servers"
    body = {"name": "tools", "url": server.url, "allowed_tools": ["record"], "require_approval": "never"}
    await ok(await w.call("POST", servers, json=body), 201)
    (background,) = [s for s in w.app.services if isinstance(s, Background)]
    assert background.store is not None
    progress, holding_now, held = background.store.progress, asyncio.Event(), asyncio.Event()

    async def holding(*args, **kwargs):  # held at the first checkpoint after the first tool call
        done = await progress(*args, **kwargs)
        if server.calls and not holding_now.is_set():
            holding_now.set()
            await held.wait()
        return done

    background.store.progress = holding
    sdk = sdk_client(key, transport)
    tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["record"]}
    created = await sdk.responses.create(model="g", input="steps=3", tools=[tool], background=True)
    await asyncio.wait_for(holding_now.wait(), DEADLINE)
    assert len(server.calls) == 1
    await ok(await w.call("DELETE", f"{servers}/tools"))

    held.set()
    record = await _final(w.app, tenant, created.id)
    await sdk.close()
    # Before the fix: three calls, two of them to a server no longer registered for the tenant.
    assert len(server.calls) == 1, server.calls
    calls = [i for i in record.response["output"] if i["type"] == "mcp_call"]
    assert len(calls) >= 2 and calls[0]["status"] == "completed", calls
    for later in calls[1:]:
        assert later["status"] == "failed" and "no longer registered" in str(later["error"]), later
