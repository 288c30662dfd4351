"""Stored rows beyond the snapshot's tables that the gateway cannot read: content captures, provider
credentials and the jobs of agent runs (SQLite keeps any value in any column: a hand edit, a row another
version wrote). Never a 500 nor a start-up that fails: a list names such a row under `unreadable`, a get
answers 409 `unreadable_row` naming how to mend it, and the mend works (docs/storage.md "Beyond the
snapshot's tables"). Each was a 500 (or a gateway that would not start) before."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest

from admin_http import error, ok, running
from mcp_server import McpTestServer
from multihome.simulators import SimulatorConfig, start_simulator

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-unreadable-runtime"
T = "/admin/v1/tenants"
CREDS = "/admin/v1/provider-credentials"

CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db", refresh_s: 0.05}}
identity: {{admin_key_env: MH_TEST_UNREADABLE_RUNTIME}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}}}
responses: {{background: {{poll_s: 0.05, event_flush_ms: 20}}}}
egress: {{allow_networks: ["127.0.0.0/8"]}}
providers:
  oa: {{kind: openai, endpoint: "{sim}/v1", auth: {{api_key_from: store}}}}
deployments:
  d: {{provider: oa, model: m}}
model_groups:
  g: {{deployments: [d], retries: 0}}
"""


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_UNREADABLE_RUNTIME", ADMIN_KEY)


@pytest.fixture
async def config_text(tmp_path, sqlite_database):
    sqlite_database("mh.db")  # CONFIG's file, at the head revision (a copy: no migration per test)
    sim = await start_simulator(SimulatorConfig(kind="openai", name="up"))
    try:
        yield CONFIG.format(tmp=tmp_path, sim=sim.url)
    finally:
        await sim.close()


def client(app, key: str = ADMIN_KEY) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gw", headers={"authorization": f"Bearer {key}"})


async def sql(tmp: Path, statement: str, params: tuple = ()) -> list:
    """On a thread, with a generous busy timeout: the app (on this event loop) may hold the write lock a moment.
    Retried too: on a loaded machine SQLite once answered `database is locked` at once, without waiting
    (a WAL database whose last connection was closing as this one opened)."""

    def run() -> list:
        with sqlite3.connect(tmp / "mh.db", timeout=60) as db:
            return db.execute(statement, params).fetchall()

    for _ in range(100):  # bounded: ~10 s of retries on top of the busy timeout
        try:
            return await asyncio.to_thread(run)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            await asyncio.sleep(0.1)
    return await asyncio.to_thread(run)


async def call(c: httpx.AsyncClient, method: str, path: str, **kw) -> httpx.Response:
    resp = await c.request(method, path, **kw)
    assert resp.status_code < 500, resp.text
    return resp


async def tenant_key(admin: httpx.AsyncClient, roles: list[str]) -> tuple[str, str]:
    tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
    body = {"name": "k", "roles": roles}
    return tid, (await ok(await admin.post(f"{T}/{tid}/keys", json=body), 201))["key"]


def unreadable_error(resp: httpx.Response, row_id: str, mend: str) -> None:
    err = error(resp, 409)
    assert err["code"] == "unreadable_row" and row_id in err["message"] and mend in err["message"], err


def named(listing: dict, table: str, row_id: str) -> dict:
    [found] = [u for u in listing.get("unreadable", []) if u["table"] == table and u["id"] == row_id]
    assert found["object"] == "unreadable_row" and found["problem"], listing
    return found


async def test_a_capture_that_cannot_be_read_is_named_beside_the_page(config_text, tmp_path):
    async with running(config_text) as app:
        admin = client(app)
        tid, key = await tenant_key(admin, ["auditor"])
        rows = [  # a time that is not a time; content that is text, not a sealed record; bytes of no envelope
            ("cap_a", "2026-01-01 00:00:01", "text"),
            ("cap_b", "soon", b"\x00"),
            ("cap_c", "2026-01-01 00:00:03", b"\x00\x01"),
        ]
        for cid, at, sealed in rows:
            await sql(
                tmp_path,
                "INSERT INTO captures VALUES (?, ?, ?, '/v1/chat/completions', 'g', 'd', 200, ?)",
                (cid, tid, at, sealed),
            )
        page = await ok(await call(client(app, key), "GET", f"{T}/{tid}/captures"))
        assert [c["id"] for c in page["data"]] == ["cap_a", "cap_c"]  # listed as not opening, not a failed page
        assert all(c["unreadable"].startswith("does not open") and "prompt" not in c for c in page["data"])
        assert named(page, "captures", "cap_b")["problem"] == "a stored value cannot be decoded (ValueError)"
        # Paging goes on from any id a page named, readable or not.
        after = await ok(await call(client(app, key), "GET", f"{T}/{tid}/captures", params={"after": "cap_a"}))
        assert [c["id"] for c in after["data"]] == ["cap_c"]
        await ok(await call(client(app, key), "GET", f"{T}/{tid}/captures", params={"after": "cap_b"}))


async def test_a_provider_credential_that_cannot_be_read_is_named_refused_by_get_and_mended_by_a_put(
    config_text, tmp_path
):
    async with running(config_text) as app:
        admin = client(app)
        await ok(await admin.put(f"{CREDS}/oa", json={"api_key": "sk-first-key-0123456789"}))
        await sql(tmp_path, "UPDATE provider_credentials SET updated_at = 'soon'")
        listed = await ok(await call(admin, "GET", CREDS))
        assert listed["data"] == [] and named(listed, "provider_credentials", "oa")
        unreadable_error(await call(admin, "GET", f"{CREDS}/oa"), "oa", "PUT /admin/v1/provider-credentials")
        await sql(tmp_path, "UPDATE provider_credentials SET version = 'new'")
        mended = await ok(await call(admin, "PUT", f"{CREDS}/oa", json={"api_key": "sk-second-key-0123456789"}))
        assert mended["set"] is True and mended["fingerprint"] == "6789"
        assert (await ok(await call(admin, "GET", f"{CREDS}/oa")))["version"] == 1
        assert "unreadable" not in await ok(await call(admin, "GET", CREDS))


async def test_a_provider_credential_stored_as_text_does_not_stop_the_gateway_from_starting(config_text, tmp_path):
    async with running(config_text) as app:
        await ok(await client(app).put(f"{CREDS}/oa", json={"api_key": "sk-first-key-0123456789"}))
    await sql(tmp_path, "UPDATE provider_credentials SET sealed = 'not a sealed key', version = 2")
    async with running(config_text) as app:  # failed its start (a TypeError) before
        admin = client(app)
        assert app.pipeline.catalog.deployments["d"].adapter._headers.get("authorization") is None  # not opened
        await ok(await call(admin, "GET", f"{CREDS}/oa"))
        await ok(await call(admin, "DELETE", f"{CREDS}/oa"))  # the mend: set it again, or delete it


async def _finished(c: httpx.AsyncClient, response_id: str) -> dict:
    for _ in range(600):  # bounded: at most ~60 s
        found = await ok(await call(c, "GET", f"/v1/responses/{response_id}"))
        if found["status"] not in ("queued", "in_progress"):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{response_id} did not finish")


async def test_an_agent_runs_job_that_cannot_be_read_is_named_in_the_list_and_refused_by_get(config_text, tmp_path):
    with McpTestServer() as server:
        async with running(config_text) as app:
            admin = client(app)
            tid, key = await tenant_key(admin, ["member"])
            body = {"name": "tools", "url": server.url, "allowed_tools": ["echo"], "require_approval": "never"}
            await ok(await admin.post(f"{T}/{tid}/mcp-servers", json=body), 201)
            member = client(app, key)
            tool = {"type": "mcp", "server_label": "tools", "server_url": server.url}
            create = {"model": "g", "input": "hi", "tools": [tool], "background": True}
            run = await ok(await call(member, "POST", "/v1/responses", json=create))
            plain = await ok(await call(member, "POST", "/v1/responses", json={**create, "tools": []}))
            await _finished(member, run["id"])
            await _finished(member, plain["id"])
            runs = f"{T}/{tid}/runs"
            assert [r["id"] for r in (await ok(await call(admin, "GET", runs)))["data"]] == [run["id"]]
            await sql(
                tmp_path, "UPDATE jobs SET updated_at = 'soon'"
            )  # both jobs: a plain response's failed the list too
            [(job_id,)] = await sql(tmp_path, "SELECT id FROM jobs WHERE ref_id = ?", (run["id"],))
            listed = await ok(await call(admin, "GET", runs))
            assert listed["data"] == [] and named(listed, "jobs", job_id)["tenant_id"] == tid
            unreadable_error(await call(admin, "GET", f"{runs}/{run['id']}"), job_id, "DELETE /v1/responses/")
            # The mend: delete the run's response; the run is gone from the list.
            assert (await ok(await call(member, "DELETE", f"/v1/responses/{run['id']}")))["deleted"] is True
            assert await ok(await call(admin, "GET", runs)) == {"object": "list", "data": [], "has_more": False}


@pytest.mark.parametrize("wrapped", ["x'0011'", "'text, not a wrapped key'"])
async def test_a_data_key_that_does_not_unwrap_is_a_503_naming_the_kms_for_stored_responses(
    config_text, tmp_path, wrapped
):
    """The KMS refuses a wrapped key it cannot decrypt (docs/encryption.md): a 503 `kms_refused` as on the admin
    API, not a 500; the tenant's calls without stored state are served."""
    async with running(config_text) as app:
        admin = client(app)
        _, key = await tenant_key(admin, ["member"])
        await ok(await admin.put(f"{CREDS}/oa", json={"api_key": "sk-first-key-0123456789"}))
        stored = await ok(await call(client(app, key), "POST", "/v1/responses", json={"model": "g", "input": "hi"}))
    await sql(tmp_path, f"UPDATE data_keys SET wrapped = {wrapped} WHERE purpose = 'responses'")
    async with running(config_text) as app:  # a cold cache: the key is unwrapped again
        member = client(app, key)
        for method, path, body in (
            ("GET", f"/v1/responses/{stored['id']}", None),
            ("POST", "/v1/responses", {"model": "g", "input": "hi again"}),
        ):
            refused = error(await member.request(method, path, json=body), 503)
            assert refused["code"] == "kms_refused" and "kms.key" in refused["message"], refused
            # The KMS named, not what it said: its own refusal (key ids, versions, an AWS account in a key ARN)
            # is for the audit trail and the operator, not for a tenant's member.
            assert "wrapped key" not in refused["message"] and "multihome-ten_" not in refused["message"], refused
        chat = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
        await ok(await call(member, "POST", "/v1/chat/completions", json=chat))
