"""Who may grant the auditor role, through the admin API in process (SQLite, then PostgreSQL).

The auditor role reads the tenant's captured prompts and answers, which its tenant-admins may not
(docs/api.md "Roles"); so only an org-admin issues auditor (or org-admin) keys. A tenant-admin asking
for one gets 403 in OpenAI's error format and nothing is stored; it may still revoke one (that removes
access). Each grant is a `key.create` event naming the roles and the org-admin who granted them.
"""

from __future__ import annotations

import httpx
import pytest

from admin_http import error, ok, running
from builders import database, identity, single

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-auditor-grant"


def _client(app, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"authorization": f"Bearer {key}"}
    )


@pytest.fixture
async def gw(db_url, monkeypatch):
    monkeypatch.setenv("MH_TEST_GRANT_ADMIN", ADMIN_KEY)
    async with running(single(storage=database(db_url), identity=identity("MH_TEST_GRANT_ADMIN"))) as app:
        admin = _client(app, ADMIN_KEY)
        tenant = (await ok(await admin.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
        yield app, admin, tenant


async def _key(client: httpx.AsyncClient, tenant: str, roles: list[str]) -> dict:
    body = {"name": "-".join(roles), "roles": roles}
    return await ok(await client.post(f"/admin/v1/tenants/{tenant}/keys", json=body), 201)


async def test_a_tenant_admin_cannot_issue_an_auditor_key(gw):
    app, admin, tenant = gw
    keys, events = f"/admin/v1/tenants/{tenant}/keys", f"/admin/v1/tenants/{tenant}/events?limit=1000"
    tenant_admin = _client(app, (await _key(admin, tenant, ["tenant-admin"]))["key"])
    before = (await ok(await admin.get(keys)))["data"]
    created_before = [e for e in (await ok(await admin.get(events)))["data"] if e["action"] == "key.create"]

    for roles in (["auditor"], ["member", "auditor"], ["auditor", "tenant-admin"], ["org-admin"]):
        err = error(await tenant_admin.post(keys, json={"name": "peek", "roles": roles}), 403)
        assert err["type"] == "permission_error" and err["code"] == "insufficient_role", err
        granted = "org-admin" if "org-admin" in roles else "auditor"
        assert err["param"] == "roles" and f"Only an org-admin can issue {granted} keys" in err["message"], err

    # Nothing was stored or recorded; the tenant-admin's own grants still work.
    assert (await ok(await admin.get(keys)))["data"] == before
    after = [e for e in (await ok(await admin.get(events)))["data"] if e["action"] == "key.create"]
    assert after == created_before
    assert (await _key(tenant_admin, tenant, ["member"]))["roles"] == ["member"]
    assert (await _key(tenant_admin, tenant, ["tenant-admin"]))["roles"] == ["tenant-admin"]


async def test_an_org_admin_grants_the_auditor_role_and_the_grant_is_recorded(gw):
    app, admin, tenant = gw
    made = await _key(admin, tenant, ["auditor"])
    assert made["roles"] == ["auditor"]
    auditor = _client(app, made["key"])
    assert (await ok(await auditor.get("/admin/v1/whoami")))["roles"] == ["auditor"]
    events = (await ok(await admin.get(f"/admin/v1/tenants/{tenant}/events?limit=1000")))["data"]
    (grant,) = [e for e in events if e["action"] == "key.create" and e["object_id"] == made["id"]]
    assert grant["actor"] == "bootstrap-admin" and grant["detail"]["roles"] == ["auditor"], grant

    # A tenant-admin may take the role away again: revoking removes access, it grants none.
    tenant_admin = _client(app, (await _key(admin, tenant, ["tenant-admin"]))["key"])
    await ok(await tenant_admin.delete(f"/admin/v1/tenants/{tenant}/keys/{made['id']}"))
    assert (await auditor.get("/admin/v1/whoami")).status_code == 401
