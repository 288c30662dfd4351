"""The token-revocation admin API in the real app (in process, SQLite storage, audit trail on, a real
local OIDC issuer): RBAC and tenant scoping, 400s that name the field, 404/405, the audit trail and
the change record, the OpenAPI document, and the revoked token refused by this replica at once."""

from __future__ import annotations

from datetime import datetime

import httpx
import msgspec
import pytest
from openapi_spec_validator import validate

from admin_http import error, ok, running
from builders import audit, database, identity, oidc, single, sqlite, typed
from multihome.api.admin.events import change_of
from multihome.app import build_app
from multihome.schema.principal import Principal
from oidc_issuer import LocalIssuer

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-revocation-api"
URL = "/admin/v1/token-revocations"
ROLE_MAP = {"ai-admins": "tenant-admin", "ai-auditors": "auditor"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_REVOCATION_ADMIN", ADMIN_KEY)


@pytest.fixture
def issuers():
    with LocalIssuer() as corp, LocalIssuer(path="/partner") as partner:
        yield corp, partner


@pytest.fixture
async def app(tmp_path, issuers):
    corp, partner = issuers
    cfg = single(
        storage=sqlite(tmp_path / "mh.db", refresh_s=0.05),
        identity=identity(
            "MH_TEST_REVOCATION_ADMIN",
            oidc(corp, "corp", role_map=ROLE_MAP, max_token_lifetime_s=7200),
            {**oidc(partner, "partner"), "claims": {"tenant_value": "ten_fixed"}},
        ),
        audit=audit(tmp_path / "audit"),
    )
    gateway = build_app(typed(cfg))
    for service in gateway.services:
        await service.start()
    yield gateway
    for service in reversed(gateway.services):
        await service.close()


def client(app, credential: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"authorization": f"Bearer {credential}"}
    )


async def test_revocation_api_rbac_scoping_bad_input_and_audit(app, issuers):
    corp, _ = issuers
    root = client(app, ADMIN_KEY)
    a = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    b = (await ok(await root.post("/admin/v1/tenants", json={"name": "globex"}), 201))["id"]

    async def key(tenant, roles):
        out = await ok(await root.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": roles}), 201)
        return out["id"], client(app, out["key"])

    admin_a_id, admin_a = await key(a, ["tenant-admin"])
    (_, auditor_a), (_, member_a), (_, admin_b) = (
        await key(a, ["auditor"]),
        await key(a, ["member"]),
        await key(b, ["tenant-admin"]),
    )
    token = corp.mint(tenant=a, sub="alice", jti="jti-1")
    other_token = corp.mint(tenant=a, sub="alice", jti="jti-2")
    alice = client(app, token)
    assert (await ok(await alice.get("/admin/v1/whoami")))["subject"] == "alice"

    # An org-admin revokes one token, naming the issuer by its config name; this replica refuses it at once.
    made = await ok(
        await root.post(
            URL, json={"kind": "jti", "issuer": "corp", "jti": "jti-1", "reason": "pasted into a public channel"}
        ),
        201,
    )
    assert made["id"].startswith("rev_") and made["object"] == "token_revocation"
    assert (made["issuer"], made["issuer_name"], made["jti"], made["tenant_id"], made["live"]) == (
        corp.issuer,
        "corp",
        "jti-1",
        None,
        True,
    )
    assert made["actor"] == "bootstrap-admin" and made["subject"] is None and made["not_before"] is None
    assert made["expires_at"] is not None  # no exp given: the issuer's max_token_lifetime_s (2 h) from now
    err = error(await alice.get("/admin/v1/whoami"), 401)
    assert err["code"] == "token_revoked" and made["id"] in err["message"] and token.split(".")[1][:16] not in str(err)
    assert (await ok(await client(app, other_token).get("/admin/v1/whoami")))["subject"] == "alice"
    with_exp = await ok(
        await root.post(
            URL, json={"kind": "jti", "issuer": corp.issuer, "jti": "jti-3", "expires_at": 4102444800, "tenant_id": a}
        ),
        201,
    )
    assert with_exp["expires_at"].startswith("2100-01-01") and with_exp["tenant_id"] == a

    # A tenant-admin revokes a subject for its own tenant only: the row is scoped to that tenant.
    sub = await ok(await admin_a.post(URL, json={"kind": "subject", "issuer": "corp", "subject": "bob"}), 201)
    assert sub["tenant_id"] == a and sub["expires_at"] is None and sub["actor"] == admin_a_id
    cut = int(datetime.fromisoformat(sub["not_before"]).timestamp())  # default cut-off: now
    assert (
        error(
            await admin_a.post(URL, json={"kind": "subject", "issuer": "corp", "subject": "bob", "tenant_id": b}), 403
        )["code"]
        == "other_tenant"
    )
    bob_b = client(app, corp.mint(tenant=b, sub="bob", iat=cut - 5))
    assert (await ok(await bob_b.get("/admin/v1/whoami")))["tenant"] == b  # tenant b's bob is not affected
    bob_a = client(app, corp.mint(tenant=a, sub="bob", iat=cut - 5))
    assert error(await bob_a.get("/admin/v1/whoami"), 401)["code"] == "token_revoked"

    # An OIDC tenant-admin can do the same; the actor is its subject.
    oidc_admin = client(app, corp.mint(tenant=a, sub="sec-lead", roles=["ai-admins"]))
    by_oidc = await ok(await oidc_admin.post(URL, json={"kind": "jti", "issuer": "corp", "jti": "jti-9"}), 201)
    assert (by_oidc["actor"], by_oidc["tenant_id"]) == ("sec-lead", a)

    # Reading: org-admin sees everything; tenant roles see their tenant's rows only.
    everything = {r["id"] for r in (await ok(await root.get(URL)))["data"]}
    assert everything == {made["id"], with_exp["id"], sub["id"], by_oidc["id"]}
    mine = {r["id"] for r in (await ok(await auditor_a.get(URL)))["data"]}
    assert mine == {with_exp["id"], sub["id"], by_oidc["id"]}
    assert (await ok(await admin_b.get(URL)))["data"] == []
    assert {r["id"] for r in (await ok(await root.get(URL, params={"tenant": a, "kind": "subject"})))["data"]} == {
        sub["id"]
    }
    assert {r["id"] for r in (await ok(await root.get(URL, params={"issuer": "corp", "subject": "bob"})))["data"]} == {
        sub["id"]
    }
    assert (await ok(await auditor_a.get(f"{URL}/{sub['id']}")))["subject"] == "bob"
    assert error(await auditor_a.get(f"{URL}/{made['id']}"), 404)["code"] == "not_found"  # org-wide
    assert error(await auditor_a.get(URL, params={"tenant": b}), 403)["code"] == "other_tenant"

    # Writing needs tenant-admin or org-admin; members read nothing.
    body = {"kind": "jti", "issuer": "corp", "jti": "x"}
    assert error(await auditor_a.post(URL, json=body), 403)["code"] == "insufficient_role"
    assert error(await auditor_a.delete(f"{URL}/{sub['id']}"), 403)["code"] == "insufficient_role"
    assert error(await member_a.get(URL), 403)["code"] == "insufficient_role"
    assert error(await admin_a.delete(f"{URL}/{made['id']}"), 404)["code"] == "not_found"  # org-wide: not theirs
    assert error(await admin_b.delete(f"{URL}/{sub['id']}"), 404)["code"] == "not_found"

    # Bad input: 400 naming the field, never a 500.
    bad = [
        (b"{not json", None, "JSON"),
        ({"issuer": "corp", "jti": "x"}, "kind", "kind"),
        ({"kind": "token", "issuer": "corp", "jti": "x"}, "kind", "jti (one token)"),
        ({"kind": "jti", "jti": "x"}, "issuer", "issuer"),
        ({"kind": "jti", "issuer": "elsewhere", "jti": "x"}, "issuer", "corp, partner"),
        ({"kind": "jti", "issuer": corp.issuer + "/", "jti": "x"}, "issuer", "trailing slash"),
        ({"kind": "jti", "issuer": "corp"}, "jti", "jti is required"),
        ({"kind": "subject", "issuer": "corp"}, "subject", "subject is required"),
        ({"kind": "jti", "issuer": "corp", "jti": "x", "subject": "s"}, "subject", "kind subject"),
        ({"kind": "jti", "issuer": "corp", "jti": "x", "not_before": "2030-01-01T00:00:00Z"}, "not_before", "kind"),
        (
            {"kind": "subject", "issuer": "corp", "subject": "s", "not_before": "2030-01-01T00:00:00"},
            "not_before",
            "timezone",
        ),
        ({"kind": "subject", "issuer": "corp", "subject": "s", "not_before": "tomorrow"}, "not_before", "RFC3339"),
        ({"kind": "jti", "issuer": "corp", "jti": "x", "expires_at": 1000}, "expires_at", "expired already"),
        ({"kind": "jti", "issuer": "corp", "jti": "x", "expires_at": 10**18}, "expires_at", "epoch seconds"),
        ({"kind": "jti", "issuer": "corp", "jti": "x", "colour": "red"}, "colour", "unknown field"),
        ({"kind": "jti", "issuer": "partner", "jti": "x", "tenant_id": a}, "tenant_id", "never map"),
        ([1], None, "object"),
    ]
    for payload, param, words in bad:
        if isinstance(payload, bytes):
            resp = await root.post(URL, content=payload)
        else:
            resp = await root.post(URL, json=payload)
        err = error(resp, 400)
        assert err["param"] == param and words in err["message"], (payload, err)
    err = error(await root.post(URL, json={"kind": "jti", "issuer": "corp", "jti": "x", "tenant_id": "ten_nope"}), 404)
    assert err["param"] == "tenant_id"
    for method in ("GET", "DELETE"):
        assert error(await root.request(method, f"{URL}/rev_unknown"), 404)["code"] == "not_found"
    assert error(await root.put(f"{URL}/{made['id']}", json={}), 405)["code"] == "method_not_allowed"

    # Lifting the revocation restores access at once on this replica.
    assert await ok(await root.delete(f"{URL}/{made['id']}")) == {
        "id": made["id"],
        "object": "token_revocation.deleted",
        "deleted": True,
        "tenant_id": None,
    }
    assert (await ok(await alice.get("/admin/v1/whoami")))["subject"] == "alice"
    assert await ok(await admin_a.delete(f"{URL}/{sub['id']}")) == {
        "id": sub["id"],
        "object": "token_revocation.deleted",
        "deleted": True,
        "tenant_id": a,
    }

    # Every change, and only those, is in the audit trail and in the change record, with actor and tenant.
    trail = (await ok(await root.get("/admin/v1/audit/events", params={"kind": "admin_change"})))["data"]
    changes = [
        (e["body"]["action"], e["body"]["object_id"], e["body"]["tenant"], e["body"]["actor"])
        for e in trail
        if e["body"]["object_type"] == "token_revocation"
    ]
    assert changes == [
        ("token_revocation.create", made["id"], None, "bootstrap-admin"),
        ("token_revocation.create", with_exp["id"], a, "bootstrap-admin"),
        ("token_revocation.create", sub["id"], a, admin_a_id),
        ("token_revocation.create", by_oidc["id"], a, "sec-lead"),
        ("token_revocation.delete", made["id"], None, "bootstrap-admin"),
        ("token_revocation.delete", sub["id"], a, admin_a_id),
    ]
    tenant_trail = (await ok(await auditor_a.get("/admin/v1/audit/events", params={"kind": "admin_change"})))["data"]
    assert made["id"] not in str(tenant_trail) and sub["id"] in str(tenant_trail)
    record = (await ok(await root.get("/admin/v1/events", params={"limit": 1000})))["data"]
    assert [(e["action"], e["object_id"]) for e in record if e["object_type"] == "token_revocation"] == [
        (action, object_id) for action, object_id, _, _ in changes
    ]


async def test_openapi_document_describes_the_revocation_routes(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as anon:
        doc = (await anon.get("/admin/v1/openapi.json")).json()
    validate(doc)
    listed = doc["paths"]["/admin/v1/token-revocations"]
    assert set(listed) == {"get", "post"}
    assert {p["name"] for p in listed["get"]["parameters"]} == {
        "tenant",
        "kind",
        "issuer",
        "subject",
        "live",
        "limit",
        "after",
    }
    assert listed["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CreateTokenRevocation"
    )
    assert set(doc["paths"]["/admin/v1/token-revocations/{id}"]) == {"get", "delete"}
    assert {"kind", "issuer"} <= set(doc["components"]["schemas"]["CreateTokenRevocation"]["required"])


WHO = Principal(tenant="ten_a", subject="key_adm", source="api_key", roles=frozenset({"tenant-admin"}))


@pytest.mark.parametrize(
    "method, path, response, action, object_id, tenant",
    [
        ("POST", URL, {"id": "rev_1", "tenant_id": "ten_a", "jti": "j"}, "token_revocation.create", "rev_1", "ten_a"),
        ("POST", URL, {"id": "rev_2", "tenant_id": None}, "token_revocation.create", "rev_2", None),
        ("DELETE", f"{URL}/rev_3", {"id": "rev_3", "tenant_id": "ten_a"}, "token_revocation.delete", "rev_3", "ten_a"),
        (
            "DELETE",
            "/admin/v1/tenants/ten_b/keys/key_1",
            {"id": "key_1", "tenant_id": "ten_b"},
            "key.revoke",
            "key_1",
            "ten_b",
        ),
    ],
)
def test_change_of_names_revocation_changes_and_their_tenant(method, path, response, action, object_id, tenant):
    change = change_of(method, path, WHO, msgspec.json.encode(response))
    assert (change.action, change.object_type, change.object_id, change.tenant) == (
        action,
        action.split(".")[0],
        object_id,
        tenant,
    )
    assert set(change.detail) == {"method", "path", "actor_source"}  # the route and ids, never response contents


@pytest.fixture
async def stored(db_url, issuers):
    """The app on SQLite, then PostgreSQL, trusting `corp` with an org-admin role mapped too."""
    corp, _ = issuers
    roles = {**ROLE_MAP, "ai-org": "org-admin"}
    cfg = single(
        storage=database(db_url, refresh_s=0.05),
        identity=identity("MH_TEST_REVOCATION_ADMIN", oidc(corp, "corp", role_map=roles)),
    )
    async with running(cfg) as gateway:
        yield gateway


async def test_a_tenant_admin_cannot_revoke_what_it_could_not_grant_nor_lift_an_org_admins_revocation(stored, issuers):
    """What a tenant-admin could not grant (the auditor and org-admin roles) it cannot take away: its
    revocations, stored and answered as set by a tenant-admin, refuse its tenant's other tokens but none
    holding one of those roles; and a revocation an org-admin set is the org-admin's to lift (403)."""
    corp, _ = issuers
    root = client(stored, ADMIN_KEY)
    a = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    made = await ok(await root.post(f"/admin/v1/tenants/{a}/keys", json={"name": "k", "roles": ["tenant-admin"]}), 201)
    admin_a = client(stored, made["key"])
    now = int(datetime.now().timestamp()) - 5
    tokens = {
        "alice": corp.mint(tenant=a, sub="alice", jti="j-alice", roles=["ai-auditors"], iat=now),
        "olga": corp.mint(tenant=a, sub="olga", jti="j-olga", roles=["ai-org"], iat=now),
        "tim": corp.mint(tenant=a, sub="tim", jti="j-tim", roles=["ai-admins"], iat=now),
    }
    users = {name: client(stored, token) for name, token in tokens.items()}
    for name, user in users.items():
        assert (await ok(await user.get("/admin/v1/whoami")))["subject"] == name

    mine = {}
    for name in tokens:
        by_subject = {"kind": "subject", "issuer": "corp", "subject": name}
        mine[name] = await ok(await admin_a.post(URL, json=by_subject), 201)
        assert (mine[name]["set_by_role"], mine[name]["tenant_id"]) == ("tenant-admin", a)
        by_jti = await ok(await admin_a.post(URL, json={"kind": "jti", "issuer": "corp", "jti": f"j-{name}"}), 201)
        assert by_jti["set_by_role"] == "tenant-admin"
    # The auditor and the org-admin keep their access; the tenant-admin's token is refused.
    assert "auditor" in (await ok(await users["alice"].get("/admin/v1/whoami")))["roles"]
    assert "org-admin" in (await ok(await users["olga"].get("/admin/v1/whoami")))["roles"]
    assert error(await users["tim"].get("/admin/v1/whoami"), 401)["code"] == "token_revoked"

    # An org-admin's revocation refuses the auditor, and only an org-admin lifts it.
    theirs = await ok(
        await root.post(URL, json={"kind": "subject", "issuer": "corp", "subject": "alice", "tenant_id": a}), 201
    )
    assert theirs["set_by_role"] == "org-admin"
    assert error(await users["alice"].get("/admin/v1/whoami"), 401)["code"] == "token_revoked"
    err = error(await admin_a.delete(f"{URL}/{theirs['id']}"), 403)
    assert err["code"] == "insufficient_role" and "only an org-admin can lift it" in err["message"], err
    assert error(await users["alice"].get("/admin/v1/whoami"), 401)["code"] == "token_revoked"
    assert (await ok(await root.get(f"{URL}/{theirs['id']}")))["id"] == theirs["id"]  # still there

    # Its own it lifts; the org-admin lifts the org-admin's.
    for name in tokens:
        await ok(await admin_a.delete(f"{URL}/{mine[name]['id']}"))
    await ok(await root.delete(f"{URL}/{theirs['id']}"))
    assert error(await users["tim"].get("/admin/v1/whoami"), 401)["code"] == "token_revoked"  # its jti row
    assert (await ok(await users["alice"].get("/admin/v1/whoami")))["subject"] == "alice"
