"""The lists a tenant's admin can grow are answered a page at a time (api/admin/pages.py): keys (revoked ones stay
listed, so the list grows with every key ever made: 100,000 keys read, built and encoded whole on the event loop
were 2.4 s of every tenant's calls waiting and 30 MB in one answer), teams (10,000 a tenant), policies and MCP
servers (1,000 each). `?limit=` (1-1000, default 1000), `?after=<last_id>`, `has_more`, `last_id`; a bad limit or
cursor is a 400; the CLI reads every page, the console shows the first (docs/api.md)."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from admin_http import ok, pages_through, running, served_for_cli, walk
from multihome.cli import main
from multihome.storage import open_store

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-key-pages"
CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
identity: {{admin_key_env: MH_TEST_KEY_PAGES_ADMIN}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}}}
providers: {{p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}}}
deployments: {{d: {{provider: p, model: m}}}}
model_groups: {{g: {{deployments: [d]}}}}
"""
T = "/admin/v1/tenants"
SERVER_URL = "https://mcp.example.com/mcp"
# list path under a tenant -> the body that makes its row `i` (names sort as they are made)
MAKE = {
    "teams": lambda i: {"name": f"team-{i:02}"},
    "policies": lambda i: {"scope": "tenant", "rules": [], "description": f"policy {i:02}"},
    "mcp-servers": lambda i: {"name": f"server-{i:02}", "url": SERVER_URL},
    # An org-admin's, revoked ones listed too: each grant or pin ever made (a revoke keeps the row).
    "entitlements": lambda i: {"model_group": "g", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "note": f"{i}"},
    "stateful-pins": lambda i: {"providers": ["p"], "note": f"pin {i:02}"},
}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_KEY_PAGES_ADMIN", ADMIN_KEY)


def _client(app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )


async def test_keys_come_a_page_at_a_time_revoked_ones_too(tmp_path):
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
        made = [(await ok(await admin.post(f"{T}/{tid}/keys", json={"name": f"k{i}"}), 201))["id"] for i in range(25)]
        for key_id in made[3:6]:
            await ok(await admin.delete(f"{T}/{tid}/keys/{key_id}"))
        # Another tenant's key is no cursor here: the same answer as an id that does not exist, nothing of it shown.
        other = (await ok(await admin.post(T, json={"name": "globex"}), 201))["id"]
        theirs = (await ok(await admin.post(f"{T}/{other}/keys", json={"name": "theirs"}), 201))["id"]
        await pages_through(admin, f"{T}/{tid}/keys", made, theirs)  # oldest first, each once, revoked ones too


@pytest.mark.parametrize("kind", sorted(MAKE))
async def test_teams_policies_and_mcp_servers_come_a_page_at_a_time(tmp_path, kind):
    """They were read, built and encoded whole, whatever ?limit= said."""
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid, other = [(await ok(await admin.post(T, json={"name": n}), 201))["id"] for n in ("acme", "globex")]
        path = f"{T}/{tid}/{kind}"
        made = [(await ok(await admin.post(path, json=MAKE[kind](i)), 201))["id"] for i in range(25)]
        theirs = (await ok(await admin.post(f"{T}/{other}/{kind}", json=MAKE[kind](99)), 201))["id"]
        # in order, each once, none of the other tenant's
        await pages_through(admin, path, made, theirs, by_name=kind == "mcp-servers")


@pytest.mark.parametrize("kind", sorted(MAKE))
async def test_a_walk_goes_on_past_a_row_deleted_between_pages(tmp_path, kind):
    """Another admin deletes the last row of the page a client read: the next page is the rows after it (it was
    a 400, the client's walk ended half-way)."""
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
        path = f"{T}/{tid}/{kind}"
        made = [await ok(await admin.post(path, json=MAKE[kind](i)), 201) for i in range(5)]
        first = await ok(await admin.get(path, params={"limit": 2}))
        assert (await admin.delete(f"{path}/{first['last_id']}")).is_success
        rest = await ok(await admin.get(path, params={"limit": 2, "after": first["last_id"]}))
        assert [row["id"] for row in rest["data"]] == [row["id"] for row in made[2:4]] and rest["has_more"]


async def test_a_namespace_walk_goes_on_past_a_namespace_deleted_between_pages(tmp_path):
    """The last namespace of the page a client read is deleted: the next page (client's and admin's) is the
    namespaces after it by agent and user (it was a 400 naming `after`: a namespace id carries no place)."""
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
        spaces = "/v1/memory/namespaces"
        users = [f"u{i}" for i in range(7)]
        for user in users:
            await ok(await admin.post(spaces, params={"tenant": tid}, json={"agent_id": "bot", "user_id": user}))
        for path, query in ((spaces, {"tenant": tid}), (f"{T}/{tid}/memory/namespaces", {})):
            first = await ok(await admin.get(path, params={**query, "limit": 2}))
            assert [n["user_id"] for n in first["data"]] == users[:2], first
            gone = {"tenant": tid, "agent_id": "bot", "user_id": first["data"][-1]["user_id"]}
            assert (await admin.delete(spaces, params=gone)).is_success
            users.remove(gone["user_id"])
            rest = await ok(await admin.get(path, params={**query, "limit": 2, "after": first["last_id"]}))
            assert [n["user_id"] for n in rest["data"]] == users[1:3] and rest["has_more"], rest


@pytest.fixture
def served(tmp_path, monkeypatch):
    with served_for_cli(CONFIG.format(tmp=tmp_path), monkeypatch, ADMIN_KEY):
        yield


@pytest.fixture
def pages_of_4(monkeypatch):
    from multihome.api.admin import pages

    monkeypatch.setattr(pages, "MAX_PAGE", 4)


def test_the_cli_lists_every_page(served, pages_of_4, capsys):  # the 11 keys come in three pages

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    run("tenants", "create", "acme")
    for i in range(11):
        run("keys", "create", "--tenant", "acme", "--name", f"cli-key-{i}")
    table = run("keys", "list", "--tenant", "acme")
    assert sorted(w for line in table.splitlines() for w in line.split() if w.startswith("cli-key-")) == sorted(
        f"cli-key-{i}" for i in range(11)
    ), table
    listed = json.loads(run("keys", "list", "--tenant", "acme", "--json"))
    assert [k["name"] for k in listed["data"]] == [f"cli-key-{i}" for i in range(11)] and "has_more" not in listed
    revoked = json.loads(run("keys", "revoke", "--tenant", "acme", "cli-key-10"))  # by name: found on the last page
    assert revoked["id"] == listed["data"][-1]["id"] and revoked["revoked_at"]


def test_the_cli_lists_every_page_of_teams_policies_and_mcp_servers(served, pages_of_4, capsys):  # 9 in 3 pages

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    run("tenants", "create", "acme")
    for i in range(9):
        run("teams", "create", "--tenant", "acme", f"team-{i}")
        run("policy", "create", "--tenant", "acme", json.dumps(MAKE["policies"](i)))
        run("mcp-servers", "add", "--tenant", "acme", f"server-{i}", "--server-url", SERVER_URL, "--no-headers")
    for argv, field, made in (
        (("teams", "list"), "name", [f"team-{i}" for i in range(9)]),
        (("policy", "list"), "description", [f"policy {i:02}" for i in range(9)]),
        (("mcp-servers", "list"), "name", [f"server-{i}" for i in range(9)]),
    ):
        listed = json.loads(run(*argv, "--tenant", "acme", "--json"))
        assert [row[field] for row in listed["data"]] == made and "has_more" not in listed, argv
    assert "server-8" in run("mcp-servers", "list", "--tenant", "acme")  # the table too
    key = json.loads(run("keys", "create", "--tenant", "acme", "--name", "k", "--team", "team-8", "--json"))
    assert key["team_id"] == json.loads(run("teams", "list", "--tenant", "acme", "--json"))["data"][-1]["id"]


def test_the_cli_reads_every_page_of_a_usage_summary(served, pages_of_4, capsys):  # 6 keys in 2 pages
    """A call to no answering upstream is metered all the same (an error): one entry per key."""
    assert main(["tenants", "create", "acme"]) == 0
    capsys.readouterr()
    url = os.environ["MULTIHOME_URL"]
    for i in range(6):
        assert main(["keys", "create", "--tenant", "acme", "--name", f"usage-key-{i}", "--json"]) == 0
        secret = json.loads(capsys.readouterr().out)["key"]
        body = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"}, timeout=30)
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    tenant = httpx.get(f"{url}{T}", headers=auth).json()["data"][0]["id"]
    first = httpx.get(f"{url}{T}/{tenant}/usage", params={"group_by": "key"}, headers=auth).json()
    assert len(first["data"]) == 4 and first["has_more"] and first["next_page"]  # the API's page: 4 here
    assert main(["usage", "--tenant", "acme", "--by", "key", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["data"]) == 6 and "has_more" not in summary and "next_page" not in summary
    assert sum(e["calls"] for e in summary["data"]) == 6
    assert main(["usage", "--tenant", "acme", "--by", "key"]) == 0
    table = capsys.readouterr().out
    assert all(f"usage-key-{i}" in table for i in range(6)), table


async def test_the_console_shows_the_first_page_of_a_usage_summary_and_says_so(tmp_path, pages_of_4):
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as gw:
            for i in range(6):
                secret = (await ok(await admin.post(f"{T}/{tid}/keys", json={"name": f"key-{i}"}), 201))["key"]
                body = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
                await gw.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"})
            assert (await gw.post("/console/login", data={"key": ADMIN_KEY})).status_code == 303
            by_key = (await gw.get("/console/spend", params={"tenant": tid, "group_by": "key"})).text
            by_group = (await gw.get("/console/spend", params={"tenant": tid, "group_by": "model_group"})).text
    assert "The first 4 entries of the period only" in by_key and "usage-more" not in by_group


def test_the_cli_lists_every_page_of_memory_namespaces(served, pages_of_4, capsys):  # 6 in 2 pages
    assert main(["tenants", "create", "acme"]) == 0
    tenant = capsys.readouterr().out.split(": ")[1].strip()
    url, auth = os.environ["MULTIHOME_URL"], {"authorization": f"Bearer {ADMIN_KEY}"}
    users = [f"page-user-{i}" for i in range(6)]
    for user in users:
        body = {"agent_id": "cli", "user_id": user}
        assert httpx.post(f"{url}/v1/memory/namespaces", params={"tenant": tenant}, json=body, headers=auth).is_success
    assert main(["memory", "namespaces", "--tenant", "acme", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [n["user_id"] for n in listed["data"]] == users and "has_more" not in listed
    assert main(["memory", "namespaces", "--tenant", "acme"]) == 0
    assert "page-user-5" in capsys.readouterr().out  # the table too


async def test_the_console_shows_the_first_page_of_keys_teams_and_entitlements_and_says_so(tmp_path, pages_of_4):
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
        for i in range(6):
            await ok(await admin.post(f"{T}/{tid}/teams", json={"name": f"team-{i}"}), 201)
            await ok(await admin.post(f"{T}/{tid}/keys", json={"name": f"key-{i}"}), 201)
            await ok(await admin.post(f"{T}/{tid}/entitlements", json=MAKE["entitlements"](i)), 201)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
            assert (await browser.post("/console/login", data={"key": ADMIN_KEY})).status_code == 303
            page = (await browser.get(f"/console/tenants/{tid}")).text
    assert "The first 4 keys, oldest first" in page and "The first 4 teams, oldest first" in page
    assert "The first 4 entitlements, oldest first" in page
    assert "team-3" in page and "team-4" not in page  # the first page of teams only (the key form's choices too)


async def test_token_revocations_come_a_page_at_a_time(tmp_path):
    """Stored straight (no issuer need be configured to list them); ?tenant= and the filters apply to every page."""
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid, other = [(await ok(await admin.post(T, json={"name": n}), 201))["id"] for n in ("acme", "globex")]
        store = await open_store(f"sqlite+aiosqlite:///{tmp_path}/mh.db")
        try:

            async def revoke(tenant: str, subject: str) -> str:
                made = await store.create_token_revocation(
                    kind="subject", issuer="https://idp.example", subject=subject, tenant_id=tenant, actor="t"
                )
                return made.id

            made = [await revoke(tid, f"s-{i}") for i in range(25)]
            theirs = await revoke(other, "s-0")
        finally:
            await store.close()
        path = "/admin/v1/token-revocations"
        await pages_through(admin, path, made, theirs, tenant=tid)
        assert await walk(admin, path, 10, tenant=tid, subject="s-7") == ([made[7]], 1)


async def test_console_session_ends_come_a_page_at_a_time(tmp_path):
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid, other = [(await ok(await admin.post(T, json={"name": n}), 201))["id"] for n in ("acme", "globex")]
        path = "/admin/v1/console-session-ends"

        async def end(tenant: str, subject: str) -> str:
            return (await ok(await admin.post(path, json={"subject": subject, "tenant_id": tenant}), 201))["id"]

        made = [await end(tid, f"key_s{i}") for i in range(25)]
        theirs = await end(other, "key_s0")
        await pages_through(admin, path, made, theirs, tenant=tid)


async def test_memory_namespaces_come_a_page_at_a_time_to_a_client_and_an_admin(tmp_path):
    """A tenant may hold 100,000 (memory.per_tenant.max_namespaces): both lists were read and aggregated whole."""
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid, other = [(await ok(await admin.post(T, json={"name": n}), 201))["id"] for n in ("acme", "globex")]
        keys = {}
        for tenant in (tid, other):
            made = await ok(await admin.post(f"{T}/{tenant}/keys", json={"name": "app", "roles": ["member"]}), 201)
            keys[tenant] = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://gw",
                headers={"authorization": f"Bearer {made['key']}"},
            )
        users = [f"u{i:02}" for i in range(25)]
        for user in users:
            await ok(await keys[tid].post("/v1/memory/namespaces", json={"agent_id": "bot", "user_id": user}))
        # (its user sorts after this tenant's: its cursor is a place past all of them)
        await ok(await keys[other].post("/v1/memory/namespaces", json={"agent_id": "bot", "user_id": "zz-theirs"}))
        theirs = (await ok(await keys[other].get("/v1/memory/namespaces")))["last_id"]
        for client, path in ((keys[tid], "/v1/memory/namespaces"), (admin, f"{T}/{tid}/memory/namespaces")):
            await pages_through(client, path, users, theirs, "user_id")


async def test_the_console_shows_the_first_page_of_memory_namespaces_and_says_so(tmp_path, pages_of_4):
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app)
        tid = (await ok(await admin.post(T, json={"name": "acme"}), 201))["id"]
        for i in range(6):
            body = {"agent_id": "bot", "user_id": f"u{i:02}"}
            await ok(await admin.post("/v1/memory/namespaces", params={"tenant": tid}, json=body))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
            assert (await browser.post("/console/login", data={"key": ADMIN_KEY})).status_code == 303
            page = (await browser.get("/console/state", params={"tenant": tid})).text
    assert "u03" in page and "u04" not in page
    assert "The first 4 namespaces by agent and user" in page
