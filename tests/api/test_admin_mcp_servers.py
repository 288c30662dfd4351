"""MCP servers through the admin API, in process (SQLite, the local KMS, the audit trail): register,
read, change and remove a tenant's servers; who may (tenant-admin of that tenant, org-admin; the
tenant's auditor reads); another tenant's server is a 404; bad URLs, names and headers are 400s;
no answer, audit file or database byte holds a header value. The store on PostgreSQL (pg_dump) is
tests/tools/test_servers.py."""

from __future__ import annotations

import json

import httpx
import pytest

from admin_http import error, ok, running
from mcp_server import free_port

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-mcp-servers"
SECRET = "mcp-header-secret-6c1f0a9e2b"
ROTATED = "mcp-header-rotated-93d7e5b1aa"

CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
audit: {{dir: "{tmp}/audit"}}
identity: {{admin_key_env: MH_TEST_MCP_ADMIN}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}}}
providers: {{p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}}}
deployments: {{d: {{provider: p, model: m}}}}
model_groups: {{g: {{deployments: [d]}}}}
"""


def _client(app, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"authorization": f"Bearer {key}"}
    )


@pytest.fixture
async def gw(tmp_path, monkeypatch, sqlite_database):
    monkeypatch.setenv("MH_TEST_MCP_ADMIN", ADMIN_KEY)
    sqlite_database("mh.db")  # CONFIG's file, at the head revision (a copy: no migration per test)
    async with running(CONFIG.format(tmp=tmp_path)) as app:
        admin = _client(app, ADMIN_KEY)
        tenants = [(await ok(await admin.post("/admin/v1/tenants", json={"name": n}), 201))["id"] for n in "ab"]
        yield app, admin, tenants


async def _key(admin: httpx.AsyncClient, tenant: str, role: str) -> str:
    body = {"name": role, "roles": [role]}
    return (await ok(await admin.post(f"/admin/v1/tenants/{tenant}/keys", json=body), 201))["key"]


def _servers(tenant: str, name: str = "") -> str:
    return f"/admin/v1/tenants/{tenant}/mcp-servers" + (f"/{name}" if name else "")


async def test_register_read_change_remove_without_ever_showing_a_header_value(gw, tmp_path):
    app, admin, (a, _) = gw
    body = {
        "name": "tools",
        "url": "HTTP://MCP.Example.com:8080/mcp",
        "description": "team tools",
        "allowed_tools": ["echo", "add", "echo"],
        "require_approval": {"never": {"tool_names": ["add"]}},
        "headers": {"Authorization": f"Bearer {SECRET}", "X-Team": SECRET},
    }
    answers = [created := await ok(await admin.post(_servers(a), json=body), 201)]
    assert created["id"] == created["name"] == "tools" and created["tenant_id"] == a
    assert created["url"] == "http://mcp.example.com:8080/mcp"  # scheme and host lower-cased
    assert created["allowed_tools"] == ["add", "echo"] and created["header_names"] == ["Authorization", "X-Team"]
    assert created["require_approval"] == {"never": {"tool_names": ["add"]}}
    assert created["object"] == "mcp_server" and created["created_by"] and created["updated_at"]
    error(await admin.post(_servers(a), json=body), 409)

    answers.append(await ok(await admin.get(_servers(a))))
    assert [s["name"] for s in answers[-1]["data"]] == ["tools"]
    answers.append(await ok(await admin.get(_servers(a, "tools"))))
    changed = await ok(await admin.patch(_servers(a, "tools"), json={"headers": {"X-Key": ROTATED}}))
    answers.append(changed)
    assert changed["header_names"] == ["X-Key"] and changed["allowed_tools"] == ["add", "echo"]
    changed = await ok(
        await admin.patch(_servers(a, "tools"), json={"allowed_tools": None, "require_approval": "never"})
    )
    answers.append(changed)
    assert changed["allowed_tools"] is None and changed["require_approval"] == "never"
    assert changed["header_names"] == ["X-Key"] and changed["url"] == created["url"]

    # Opened only where it is used: the endpoint the client will call holds the value.
    from multihome.tools.servers import McpServerStore

    store = McpServerStore(app.admin.services.crypto.keyring, app.admin.services.crypto.keyrings.engine)
    endpoint = await store.endpoint(a, "tools")
    assert dict(endpoint.headers) == {"X-Key": ROTATED} and ROTATED not in repr(endpoint)

    answers.append(await ok(await admin.delete(_servers(a, "tools"))))
    assert answers[-1] == {"id": "tools", "object": "mcp_server.deleted", "deleted": True}
    error(await admin.get(_servers(a, "tools")), 404)
    error(await admin.delete(_servers(a, "tools")), 404)

    trail = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    shown = json.dumps(answers)
    database = b"".join(p.read_bytes() for p in tmp_path.glob("mh.db*"))
    for secret in (SECRET, ROTATED):
        assert secret not in shown and secret not in trail and secret.encode() not in database
    changes = [json.loads(line)["body"] for line in trail.splitlines() if '"admin_change"' in line]
    mcp = [(c["action"], c["object_id"], c["tenant"]) for c in changes if c["action"].startswith("mcp_server.")]
    assert mcp == [
        ("mcp_server.create", "tools", a),
        ("mcp_server.update", "tools", a),
        ("mcp_server.update", "tools", a),
        ("mcp_server.delete", "tools", a),
    ]


async def test_who_may_and_another_tenants_server_is_not_found(gw):
    app, admin, (a, b) = gw
    await ok(await admin.post(_servers(a), json={"name": "tools", "url": "https://mcp.example.com/mcp"}), 201)
    error(await admin.get(_servers(b, "tools")), 404)  # registered for a, not for b
    error(await admin.patch(_servers(b, "tools"), json={"description": "x"}), 404)
    error(await admin.delete(_servers(b, "tools")), 404)
    assert (await ok(await admin.get(_servers(b))))["data"] == []

    a_admin = _client(app, await _key(admin, a, "tenant-admin"))
    b_admin = _client(app, await _key(admin, b, "tenant-admin"))
    a_auditor = _client(app, await _key(admin, a, "auditor"))
    a_member = _client(app, await _key(admin, a, "member"))
    await ok(await a_admin.post(_servers(a), json={"name": "more", "url": "https://mcp.example.com/other"}), 201)
    await ok(await a_admin.patch(_servers(a, "more"), json={"description": "mine"}))
    assert {s["name"] for s in (await ok(await a_auditor.get(_servers(a))))["data"]} == {"tools", "more"}
    await ok(await a_auditor.get(_servers(a, "tools")))
    assert error(await a_auditor.delete(_servers(a, "tools")), 403)["code"] == "insufficient_role"
    assert error(await a_member.get(_servers(a)), 403)["code"] == "insufficient_role"
    for call in (
        b_admin.get(_servers(a)),
        b_admin.get(_servers(a, "tools")),
        b_admin.post(_servers(a), json={"name": "x", "url": "https://x.example/mcp"}),
        b_admin.delete(_servers(a, "tools")),
    ):
        assert error(await call, 403)["code"] == "other_tenant"
    await ok(await a_admin.delete(_servers(a, "more")))


async def test_a_tenant_that_does_not_exist_gets_no_registration(gw):
    app, admin, (a, _) = gw
    body = {"name": "crm", "url": "https://crm.example.com/mcp"}
    for named in ("a", "ten_doesnotexist"):  # a tenant's name is not its id
        assert error(await admin.post(_servers(named), json=body), 404)["code"] == "not_found"
        assert error(await admin.get(_servers(named)), 404)["code"] == "not_found"  # not an empty tenant's list
    await ok(await admin.post(_servers("default"), json=body), 201)  # the static keys' tenant has no row
    await ok(await admin.post(_servers(a), json=body), 201)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "t", "url": "ftp://mcp.example.com/mcp"}, "url"),
        ({"name": "t", "url": "file:///etc/passwd"}, "url"),
        ({"name": "t", "url": "https://user:pw@mcp.example.com/mcp"}, "url"),
        ({"name": "t", "url": "https:///mcp"}, "url"),
        ({"name": "t", "url": "https://mcp.example.com/mcp#x"}, "url"),
        ({"name": "t", "url": "https://mcp.example.com:99999/mcp"}, "url"),
        ({"name": "has space", "url": "https://mcp.example.com/mcp"}, "name"),
        ({"name": "x" * 41, "url": "https://mcp.example.com/mcp"}, "name"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "headers": {"Host": "evil"}}, "headers"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "headers": {"Mcp-Session-Id": "x"}}, "headers"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "headers": {"X-A": f"{SECRET}\r\nX-B: 1"}}, "headers"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "headers": {"bad name": "v"}}, "headers"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "require_approval": "sometimes"}, "require_approval"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "require_approval": {"maybe": {}}}, None),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "extra": 1}, None),
        ({"name": "t"}, "url"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "description": "a\u0000b"}, "description"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "description": "line\r\nX-Forged: 1"}, "description"),
        ({"name": "t", "url": "https://mcp.example.com/mcp", "allowed_tools": ["a\u2028b"]}, "allowed_tools"),
    ],
)
async def test_bad_registrations_are_400s_that_never_echo_a_header_value(gw, body, param):
    app, admin, (a, _) = gw
    refused = error(await admin.post(_servers(a), json=body), 400)
    if param is not None:
        assert refused["param"] == param, refused
    assert SECRET not in refused["message"]
    assert (await ok(await admin.get(_servers(a))))["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://mcp.example.com/mcp"}, "url"),
        ({"url": "https://user:pw@mcp.example.com/mcp"}, "url"),
        ({"url": "https://mcp.example.com:99999/mcp"}, "url"),
        ({"url": "https://mcp.example.com/" + "p" * 5000}, "url"),
        ({"url": "https://mcp.example.com/\u0000"}, "url"),
        ({"description": "d" * 1001}, "description"),
        ({"description": "a\u0007b"}, "description"),
        ({"allowed_tools": ["ok", "a\nb"]}, "allowed_tools"),
        ({"allowed_tools": ["x" * 129]}, "allowed_tools"),
        ({"allowed_tools": "echo"}, "allowed_tools"),
        ({"headers": {"Host": "evil"}}, "headers"),
        ({"headers": {"X-A": f"{SECRET}\r\nX-B: 1"}}, "headers"),
        ({"headers": {"X-A": SECRET * 1000}}, "headers"),
        ({"headers": {"bad name": SECRET}}, "headers"),
        ({"require_approval": "sometimes"}, "require_approval"),
        ({"require_approval": {"always": {"tool_names": [[[[]]]]}}}, None),
        # A NUL anywhere in an admin body is refused before the route's checks, naming the string's own path
        ({"require_approval": {"never": {"tool_names": ["a\u0000b"]}}}, "require_approval.never.tool_names[0]"),
        ({"name": "renamed"}, None),
        ({"extra": 1}, None),
    ],
)
async def test_a_change_is_held_to_the_registrations_bounds(gw, tmp_path, body, param):
    app, admin, (a, _) = gw
    created = await ok(await admin.post(_servers(a), json={"name": "t", "url": "https://mcp.example.com/mcp"}), 201)
    refused = error(await admin.patch(_servers(a, "t"), json=body), 400)
    if param is not None:
        assert refused["param"] == param, refused
    assert SECRET not in refused["message"]
    assert await ok(await admin.get(_servers(a, "t"))) == created  # nothing written
    trail = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    assert "mcp_server.update" not in trail and SECRET not in trail


async def test_a_patch_that_mends_an_unreadable_row_is_audited_and_one_that_does_not_writes_nothing(gw, tmp_path):
    app, admin, (a, _) = gw
    body = {"name": "t", "url": "https://mcp.example.com/mcp", "headers": {"X-Key": SECRET}}
    await ok(await admin.post(_servers(a), json=body), 201)
    import sqlalchemy as sa

    engine = app.admin.services.crypto.keyrings.engine
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE mcp_servers SET allowed_tools = '\"echo\"' WHERE name = 't'"))
    err = error(await admin.patch(_servers(a, "t"), json={"url": "https://other.example.com/mcp"}), 409)
    assert err["code"] == "unreadable_row" and "allowed_tools" in err["message"] and "PATCH" in err["message"]
    async with engine.connect() as conn:  # rolled back: the url not changed
        assert (await conn.execute(sa.text("SELECT url FROM mcp_servers WHERE name = 't'"))).scalar() == body["url"]
    mended = await ok(
        await admin.patch(_servers(a, "t"), json={"allowed_tools": ["echo"], "headers": {"X-K": ROTATED}})
    )
    assert mended["allowed_tools"] == ["echo"] and mended["header_names"] == ["X-K"]
    trail = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    changes = [json.loads(line)["body"] for line in trail.splitlines() if '"admin_change"' in line]
    assert [(c["action"], c["object_id"]) for c in changes if c["action"] == "mcp_server.update"] == [
        ("mcp_server.update", "t")
    ]  # the mend, not the refused change
    assert SECRET not in trail and ROTATED not in trail and ROTATED not in json.dumps(mended)


async def test_without_storage_it_is_a_501(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_MCP_ADMIN", ADMIN_KEY)
    text = """
server: {api_keys_env: [MH_TEST_MCP_ADMIN]}
identity: {admin_key_env: MH_TEST_MCP_ADMIN}
providers: {p: {kind: openai, endpoint: "http://127.0.0.1:9/v1"}}
deployments: {d: {provider: p, model: m}}
model_groups: {g: {deployments: [d]}}
"""
    async with running(text) as app:
        refused = error(await _client(app, ADMIN_KEY).get(_servers("default")), 501)
        assert refused["code"] == "storage_not_configured"


async def test_a_kms_that_cannot_be_reached_is_a_503_and_nothing_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_MCP_ADMIN", ADMIN_KEY)
    monkeypatch.setenv("MH_TEST_VAULT_TOKEN", "not-a-real-token")
    vault = f"http://127.0.0.1:{free_port()}"
    text = CONFIG.format(tmp=tmp_path).replace(
        f'kms: {{local: {{key_file: "{tmp_path}/kms.key"}}}}',
        f'kms: {{backend: vault, vault: {{address: "{vault}", token_env: MH_TEST_VAULT_TOKEN, timeout_s: 2}}}}',
    )
    async with running(text) as app:
        admin = _client(app, ADMIN_KEY)
        body = {"name": "crm", "url": "https://crm.example.com/mcp", "headers": {"X-Key": SECRET}}
        refused = error(await admin.post(_servers("default"), json=body), 503)
        assert refused["code"] == "kms_unavailable" and SECRET not in refused["message"]
        assert (await ok(await admin.get(_servers("default"))))["data"] == []
        # Without headers nothing is sealed: the registration needs no KMS.
        await ok(await admin.post(_servers("default"), json={"name": "open", "url": "https://o.example/mcp"}), 201)


# An address the default egress rules (public addresses only) refuse, in the spellings a resolver reads:
# (the URL, its host, the address it resolves to). On main each was registered (201), every call refused (403).
REFUSED = [
    pytest.param("http://169.254.169.254/latest/", "169.254.169.254", "169.254.169.254", id="metadata"),
    pytest.param("http://127.0.0.1:8080/", "127.0.0.1", "127.0.0.1", id="loopback"),
    pytest.param("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1", "::ffff:10.0.0.1", id="v4-mapped"),
    pytest.param("http://2130706433/", "2130706433", "127.0.0.1", id="decimal"),
    pytest.param("http://017700000001/", "017700000001", "127.0.0.1", id="octal"),
    pytest.param("http://0x7f.1/", "0x7f.1", "127.0.0.1", id="hex-short"),
    pytest.param("http://127.1/", "127.1", "127.0.0.1", id="short"),
    pytest.param("http://[::1]/", "::1", "::1", id="v6-loopback"),
    pytest.param("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe", id="nat64-metadata"),
    pytest.param("http://localhost/", "localhost", "127.0.0.1", id="a-name"),  # resolved: its addresses judged
]


def _egress_refused(refused: dict, host: str, address: str) -> None:
    assert refused["param"] == "url" and refused["code"] == "mcp_egress_denied", refused
    assert refused["type"] == "invalid_request_error"
    assert refused["message"].startswith(f"url: {host} (") and address in refused["message"], refused
    assert "egress.allow_networks" in refused["message"], refused


@pytest.mark.parametrize(("url", "host", "address"), REFUSED)
async def test_a_server_at_an_address_the_egress_rules_refuse_is_not_registered(gw, tmp_path, url, host, address):
    app, admin, (a, _) = gw
    _egress_refused(error(await admin.post(_servers(a), json={"name": "t", "url": url}), 400), host, address)
    assert (await ok(await admin.get(_servers(a))))["data"] == []  # nothing stored

    created = await ok(await admin.post(_servers(a), json={"name": "t", "url": "http://mcp.invalid/mcp"}), 201)
    _egress_refused(error(await admin.patch(_servers(a, "t"), json={"url": url}), 400), host, address)
    assert await ok(await admin.get(_servers(a, "t"))) == created  # the registration unchanged
    trail = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    changes = [json.loads(line)["body"]["action"] for line in trail.splitlines() if '"admin_change"' in line]
    assert [c for c in changes if c.startswith("mcp_server.")] == ["mcp_server.create"]  # the accepted one


async def test_a_host_that_cannot_be_resolved_now_is_registered(gw):
    """No DNS here, NXDOMAIN (.invalid never resolves): the address is not known, so it is not judged now;
    every call is, where it is dialled."""
    app, admin, (a, _) = gw
    await ok(await admin.post(_servers(a), json={"name": "t", "url": "http://mcp.invalid/mcp"}), 201)
    changed = await ok(await admin.patch(_servers(a, "t"), json={"url": "https://other.mcp.invalid:8443/"}))
    assert changed["url"] == "https://other.mcp.invalid:8443/"


async def test_an_address_the_egress_rules_allow_is_registered(tmp_path, monkeypatch, sqlite_database):
    monkeypatch.setenv("MH_TEST_MCP_ADMIN", ADMIN_KEY)
    sqlite_database("mh.db")
    text = CONFIG.format(tmp=tmp_path) + "egress: {allow_networks: [127.0.0.0/8]}\n"
    async with running(text) as app:
        admin = _client(app, ADMIN_KEY)
        for name, url in (("loop", "http://127.0.0.1:8080/mcp"), ("named", "http://localhost:8080/mcp")):
            await ok(await admin.post(_servers("default"), json={"name": name, "url": url}), 201)
        changed = await ok(await admin.patch(_servers("default", "loop"), json={"url": "http://2130706433/"}))
        assert changed["url"] == "http://2130706433/"
        # The list decides: the metadata service is still refused.
        url = "http://169.254.169.254/latest/"
        refused = error(await admin.post(_servers("default"), json={"name": "meta", "url": url}), 400)
        _egress_refused(refused, "169.254.169.254", "169.254.169.254")


async def test_a_tenant_registers_at_most_max_servers(gw, monkeypatch):
    """Registrations had no bound (a tenant's admin registering server after server got 201 each time): past the
    cap a 400 in OpenAI's error format, as the other per-tenant caps answer; another tenant is not counted."""
    from multihome.tools import servers

    monkeypatch.setattr(servers, "MAX_SERVERS_PER_TENANT", 2, raising=False)
    _, admin, (a, b) = gw
    for name in ("one", "two"):
        await ok(await admin.post(_servers(a), json={"name": name, "url": "https://mcp.example.com/mcp"}), 201)
    refused = error(await admin.post(_servers(a), json={"name": "three", "url": "https://mcp.example.com/mcp"}), 400)
    assert "the most a tenant may hold (2)" in refused["message"] and refused["type"] == "invalid_request_error"
    await ok(await admin.post(_servers(b), json={"name": "three", "url": "https://mcp.example.com/mcp"}), 201)
    assert [s["name"] for s in (await ok(await admin.get(_servers(a))))["data"]] == ["one", "two"]
