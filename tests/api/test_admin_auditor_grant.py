"""Who may grant and revoke the auditor role, through the admin API in process (SQLite, then PostgreSQL).

The auditor role reads the tenant's captured prompts and answers, which its tenant-admins may not
(docs/api.md "Roles"); so only an org-admin issues auditor (or org-admin) keys. A tenant-admin asking
for one gets 403 in OpenAI's error format and nothing is stored; nor may it revoke one (that would end
the oversight of itself, or lock an org-admin out): 403, the key keeps working, nothing is recorded.
Each grant is a `key.create` event naming the roles and the org-admin who granted them.
"""

from __future__ import annotations

import re

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

    # The org-admin who grants the role takes it away again.
    await ok(await admin.delete(f"/admin/v1/tenants/{tenant}/keys/{made['id']}"))
    assert (await auditor.get("/admin/v1/whoami")).status_code == 401


async def test_a_tenant_admin_cannot_revoke_an_auditor_or_org_admin_key(gw):
    app, admin, tenant = gw
    keys, events = f"/admin/v1/tenants/{tenant}/keys", f"/admin/v1/tenants/{tenant}/events?limit=1000"
    tenant_admin = _client(app, (await _key(admin, tenant, ["tenant-admin"]))["key"])
    for roles in (["auditor"], ["org-admin"], ["member", "auditor"]):
        held = await _key(admin, tenant, roles)
        err = error(await tenant_admin.delete(f"{keys}/{held['id']}"), 403)
        assert err["type"] == "permission_error" and err["code"] == "insufficient_role", err
        role = "org-admin" if "org-admin" in roles else "auditor"
        assert f"Only an org-admin can revoke {role} keys" in err["message"], err
        # Still live, still working, and no revocation recorded.
        assert (await ok(await admin.get(f"{keys}/{held['id']}")))["revoked_at"] is None
        assert sorted((await ok(await _client(app, held["key"]).get("/admin/v1/whoami")))["roles"]) == sorted(roles)
        revoked = [e for e in (await ok(await admin.get(events)))["data"] if e["action"] == "key.revoke"]
        assert not [e for e in revoked if e["object_id"] == held["id"]]

    # What it could have issued, it revokes: a member key, another tenant-admin's.
    for roles in (["member"], ["tenant-admin"]):
        held = await _key(tenant_admin, tenant, roles)
        assert (await ok(await tenant_admin.delete(f"{keys}/{held['id']}")))["revoked_at"] is not None
    # An unknown key is still 404, not 403.
    assert error(await tenant_admin.delete(f"{keys}/key_nope"), 404)["code"] == "not_found"


async def test_the_console_offers_a_tenant_admin_neither_the_grant_nor_the_revoke_of_those_roles(gw):
    """The tenant page's forms follow the same rule: no Revoke button on an auditor or org-admin key, no such
    role in the new key's form; and the revoke form posted for one anyway is refused, the key kept."""
    app, admin, tenant = gw
    page_path = f"/console/tenants/{tenant}"
    held = {r: (await _key(admin, tenant, [r]))["id"] for r in ("auditor", "org-admin", "member")}
    secret = (await _key(admin, tenant, ["tenant-admin"]))["key"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
        assert (await browser.post("/console/login", data={"key": secret})).status_code == 303
        page = await browser.get(page_path)
        assert page.status_code == 200, page.text[:300]
        revoke = f'action="/console/tenants/{tenant}/keys/{{}}/revoke"'
        assert revoke.format(held["member"]) in page.text
        for role in ("auditor", "org-admin"):
            assert revoke.format(held[role]) not in page.text
            assert f"<option>{role}</option>" not in page.text
        assert "<option>member</option>" in page.text and "<option>tenant-admin</option>" in page.text

        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        forged = await browser.post(f"{page_path}/keys/{held['auditor']}/revoke", data={"csrf": csrf})
        assert forged.status_code == 403 and "Only an org-admin can revoke auditor keys" in forged.text
        assert (await ok(await admin.get(f"/admin/v1/tenants/{tenant}/keys/{held['auditor']}")))["revoked_at"] is None

    # An org-admin is offered both.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
        assert (await browser.post("/console/login", data={"key": ADMIN_KEY})).status_code == 303
        page = (await browser.get(page_path)).text
        assert all(f'keys/{held[r]}/revoke"' in page for r in held) and "<option>auditor</option>" in page
