"""A tenant-admin ends the console sessions of its own tenant's people, and nobody else's (docs/console.md
"Ending sessions"), in process on SQLite then PostgreSQL. A hostile tenant-admin naming another tenant's key,
another tenant, an org-wide or tenant-wide cut-off, its tenant's org-admin or auditor key, or the bootstrap
admin gets a 403 in OpenAI's error format, stores nothing, and every one of those sessions goes on."""

from __future__ import annotations

import pytest

from admin_http import error, ok, running
from builders import database, identity, single
from console_browser import client, login, opens

pytestmark = pytest.mark.anyio
ADMIN_ENV = "MH_TEST_CONSOLE_ENDS_TA"
ADMIN_KEY = "mh-bootstrap-admin-key-for-console-ends-tenant-admin"
URL = "/admin/v1/console-session-ends"


async def _key(root, tenant: str, name: str, roles: list[str]) -> dict:
    return await ok(await root.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": name, "roles": roles}), 201)


async def test_a_tenant_admin_ends_its_own_tenants_sessions_and_no_one_elses(db_url, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    async with running(single(storage=database(db_url), identity=identity(ADMIN_ENV))) as app:
        async with client(app, ADMIN_KEY) as root:
            acme = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
            globex = (await ok(await root.post("/admin/v1/tenants", json={"name": "globex"}), 201))["id"]
            hostile = await _key(root, acme, "hostile", ["tenant-admin"])
            peer = await _key(root, acme, "peer", ["tenant-admin"])
            org_in_acme = await _key(root, acme, "org", ["org-admin"])
            auditor = await _key(root, acme, "auditor", ["auditor"])
            other = await _key(root, globex, "other", ["tenant-admin"])
        sessions = {k["id"]: await login(app, k["key"]) for k in (hostile, peer, org_in_acme, auditor, other)}
        root_session = await login(app, ADMIN_KEY)
        assert all([await opens(app, c) for c in (*sessions.values(), root_session)])

        async with client(app, hostile["key"]) as ta:
            refusals = {
                "another tenant's key": ({"subject": other["id"]}, "other_tenant"),
                "another tenant": ({"subject": peer["id"], "tenant_id": globex}, "other_tenant"),
                "an org-wide cut-off": ({}, "insufficient_role"),
                "its whole tenant": ({"tenant_id": acme}, "insufficient_role"),
                "an org-admin's key": ({"subject": org_in_acme["id"]}, "insufficient_role"),
                "an auditor's key": ({"subject": auditor["id"]}, "insufficient_role"),
                "the bootstrap admin": ({"subject": "bootstrap-admin"}, "insufficient_role"),
                "a key that is no one's": ({"subject": "key_nobody"}, "other_tenant"),
            }
            for what, (body, code) in refusals.items():
                refused = error(await ta.post(URL, json=body), 403)  # OpenAI's envelope, four fields
                assert (refused["type"], refused["code"]) == ("permission_error", code), (what, refused)
            assert error(await ta.get(URL, params={"tenant": globex}), 403)["code"] == "other_tenant"
            assert (await ok(await ta.get(URL)))["data"] == []  # nothing refused was stored
            assert all([await opens(app, c) for c in (*sessions.values(), root_session)])

            # Its own tenant's person: before, a 403 for every tenant-admin (only an org-admin could).
            ended = await ok(await ta.post(URL, json={"subject": peer["id"], "reason": "left"}), 201)
            assert (ended["tenant_id"], ended["set_by_role"], ended["issuer"]) == (acme, "tenant-admin", "api_key")
            assert [r["id"] for r in (await ok(await ta.get(URL)))["data"]] == [ended["id"]]
        assert not await opens(app, sessions[peer["id"]])
        assert all([await opens(app, sessions[k["id"]]) for k in (hostile, org_in_acme, auditor, other)])
        assert await opens(app, root_session)

        async with client(app, auditor["key"]) as aud:  # an auditor ends nothing
            assert error(await aud.post(URL, json={"subject": peer["id"]}), 403)["code"] == "insufficient_role"
