"""A background Responses turn whose run cannot read its context when it starts (the database connection
reset, or restarting: a 503 `storage_unavailable` from the store): the run raises, so its job is tried
again after the worker's backoff, instead of ending the response `failed` for an outage a retry outlives
(as a foreground client's retry of the 503 would). The retry completes it; its conversation holds the
turn once; one upstream call, billed once. The official openai SDK against the app in process, with one
simulated upstream, on SQLite and PostgreSQL; the store made unavailable at exactly that read, once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from admin_http import ok
from builders import audit
from multihome.api.responses.background import Background
from multihome.audit.writer import AuditLog, AuditUnwritable
from multihome.state.service import StateService
from multihome.tools.servers import McpServerStore
from stored_app import STORES, sdk_client, store_url, stored_world, until
from stored_app import agent_world as stored_agent_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-background-outage"
DEADLINE = 90  # seconds: a condition polled for (the job's retry backoff is a few seconds)


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_BG_OUTAGE", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_world(store_url(request, tmp_path), "MH_TEST_BG_OUTAGE", ADMIN_KEY) as (world, sim, transport):
        yield world, sim, transport


class _OutageAtTheRunsContext:
    """The state store's `items` failing once, as a reset database connection does (storage/errors.py
    `unavailable`), when a background run reads its context (`Runner.context`); the create's read goes
    through."""

    def __init__(self, runner, store) -> None:
        self.fired = 0
        self._inside = False
        self._context, runner.context = runner.context, self._run_context
        self._items, store.items = store.items, self._read

    async def _run_context(self, *args, **kwargs):
        self._inside = self.fired == 0
        try:
            return await self._context(*args, **kwargs)
        finally:
            self._inside = False

    async def _read(self, *args, **kwargs):
        if self._inside:
            self._inside = False
            self.fired += 1
            raise ConnectionResetError("the database connection was reset")
        return await self._items(*args, **kwargs)


async def test_a_run_that_cannot_read_its_context_is_tried_again_and_completes(world):
    w, sim, transport = world
    tenant, key = await w.tenant("acme")
    (state,) = [s for s in w.app.services if isinstance(s, StateService)]
    (background,) = [s for s in w.app.services if isinstance(s, Background)]
    outage = _OutageAtTheRunsContext(background.runner, state.store)
    sdk = sdk_client(key, transport)
    conv = await sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"}])
    created = await sdk.responses.create(model="g", conversation=conv.id, input="and again", background=True)
    assert created.status in ("queued", "in_progress")

    async def final():
        got = await sdk.responses.retrieve(created.id)
        return got if got.status not in ("queued", "in_progress") else None

    done = await until(final, "the response never ended", DEADLINE)
    # Before: `failed`, the outage at the run's start shown as the turn's error (storage_unavailable).
    assert done.status == "completed", (done.status, done.error)
    assert outage.fired == 1
    assert sim.state.stats.requests == 1, "the upstream was called by the run that read its context only"

    items = [i async for i in sdk.conversations.items.list(conv.id, limit=100, order="asc")]
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "user"), ("message", "assistant")]
    assert items[-1].content[0].text == done.output_text

    usage = await ok(await w.call("GET", f"/admin/v1/tenants/{tenant}/usage"))
    assert [row["calls"] for row in usage["data"]] == [1], usage
    await sdk.close()


@pytest.fixture(params=STORES)
async def agent_world(request, tmp_path) -> AsyncIterator[tuple]:
    async with stored_agent_world(
        store_url(request, tmp_path), tmp_path, "MH_TEST_BG_OUTAGE", ADMIN_KEY, audit=audit(tmp_path / "audit")
    ) as world:
        yield world


async def _record_twice(key, transport, server) -> tuple:
    """(the created response, the response once ended) of a background run making two `record` calls."""
    async with sdk_client(key, transport) as sdk:
        tool = {"type": "mcp", "server_label": "tools", "server_url": server.url, "allowed_tools": ["record"]}
        created = await sdk.responses.create(model="g", input="steps=2", tools=[tool], background=True)

        async def final():
            got = await sdk.responses.retrieve(created.id)
            return got if got.status not in ("queued", "in_progress") else None

        return created, await until(final, "the response never ended", DEADLINE)


async def test_an_agent_run_that_cannot_check_its_mcp_registration_is_tried_again(agent_world, monkeypatch):
    """The check before each MCP call that the server is still registered as it was (`unchanged`) meets a
    reset connection once: the job is tried again from its last checkpoint, and the call is made then,
    rather than failing as if an admin had deleted the server."""
    w, sim, transport, server = agent_world
    tenant, key = await w.tenant("acme")
    body = {"name": "tools", "url": server.url, "allowed_tools": ["record"], "require_approval": "never"}
    await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/mcp-servers", json=body), 201)
    row, fired = McpServerStore._row, []

    async def resetting(self, *args, **kwargs):  # with server_url, only `unchanged` reads one row by name
        if not fired:
            fired.append(1)
            raise ConnectionResetError("the database connection was reset")
        return await row(self, *args, **kwargs)

    monkeypatch.setattr(McpServerStore, "_row", resetting)
    _, done = await _record_twice(key, transport, server)
    assert fired == [1]
    calls = [i for i in done.output if i.type == "mcp_call"]
    # Before: the first call `failed` ("no longer registered ... or could not be read now"), not made.
    assert calls and all(c.status == "completed" for c in calls), [(c.status, c.error) for c in calls]
    assert done.status == "completed", (done.status, done.error)
    assert len(server.calls) == len(calls), server.calls


@pytest.mark.parametrize("refused", ["model_call", "tool_call"])
async def test_an_agent_run_whose_step_cannot_be_audited_is_tried_again_from_its_checkpoint(
    agent_world, monkeypatch, refused
):
    """The audit trail refuses one `agent_step` event mid-run (its disk full: the writer fails the event's
    producer with AuditUnwritable, audit/writer.py): the run raises and its job is tried again from its last
    checkpoint (docs/agents.md "Durability"), once the trail takes events again. It completes; the step in flight
    is repeated under its request id (a model step: billed once, one usage row each) or idempotency key (a tool
    call: the MCP server performs it once)."""
    w, sim, transport, server = agent_world
    tenant, key = await w.tenant("acme")
    body = {"name": "tools", "url": server.url, "allowed_tools": ["record"], "require_approval": "never"}
    await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/mcp-servers", json=body), 201)
    append, fired = AuditLog.append, []

    def full_once(self, kind, event):
        if kind == "agent_step" and event.action == refused and event.step == 2 and not fired:
            fired.append(event.run_id)
            future = self._loop.create_future()
            future.set_exception(AuditUnwritable(28, "the audit trail cannot be written (No space left on device)"))
            return future
        return append(self, kind, event)

    monkeypatch.setattr(AuditLog, "append", full_once)
    created, done = await _record_twice(key, transport, server)
    assert fired == [created.id]
    assert done.status == "completed", (done.status, done.error)
    calls = [i for i in done.output if i.type == "mcp_call"]
    assert len(calls) == 2 and all(c.status == "completed" for c in calls), [(c.status, c.error) for c in calls]
    assert len(server.calls) == 2, server.calls  # each tool call performed once
    steps = len(calls) + 1  # a model step per call, and the answer
    usage = await ok(await w.call("GET", f"/admin/v1/tenants/{tenant}/usage"))
    assert sum(row["calls"] for row in usage["data"]) == steps, usage  # no model step billed twice
    repeated = 1 if refused == "model_call" else 0  # the step whose event was refused, made again upstream
    assert sim.state.stats.requests == steps + repeated
