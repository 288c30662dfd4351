"""`POST /admin/v1/console-session-ends` (docs/console.md "Ending sessions"), in process on SQLite: an org-admin
ends every console session of a subject (a tenant-admin's key) issued up to now, or everyone's; the replica
that took the change refuses them before it answers; a session started afterwards is let in; only an
org-admin may; bad input is a 400; the change is in the audit trail; without storage, a 501 that says why."""

from __future__ import annotations

import time

import pytest

from admin_http import error, ok, running
from builders import audit, database, identity, open_door, single
from console_browser import client, login, opens

pytestmark = pytest.mark.anyio
ADMIN_ENV = "MH_TEST_CONSOLE_ENDS"
ADMIN_KEY = "mh-bootstrap-admin-key-for-console-session-ends"
URL = "/admin/v1/console-session-ends"


async def test_an_org_admin_ends_a_subjects_console_sessions(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    cfg = single(storage=database(sqlite_database()), identity=identity(ADMIN_ENV), audit=audit(tmp_path / "audit"))
    async with running(cfg) as app, client(app, ADMIN_KEY) as root:
        tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
        made = await ok(
            await root.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "ops", "roles": ["tenant-admin"]}), 201
        )
        sessions = [await login(app, made["key"]) for _ in range(2)]
        mine = await login(app, ADMIN_KEY)
        assert all([await opens(app, c) for c in (*sessions, mine)])

        # Everyone's sessions are an org-admin's to end (a tenant-admin's part: test_console_session_ends_tenant_admin.py).
        async with client(app, made["key"]) as tenant_admin:
            denied = error(await tenant_admin.post(URL, json={}), 403)
            assert denied["code"] == "insufficient_role"
        for bad, param in (({"subject": 5}, "subject"), ({"not_before": "yesterday"}, "not_before")):
            assert error(await root.post(URL, json=bad), 400)["param"] == param
        error(await root.post(URL, json={"subjects": ["a"]}), 400)  # an unknown field
        assert error(await root.post(URL, json={"not_before": 10}), 400)["code"]  # all expired by themselves
        # A cut-off a year ahead would lock everyone out of the console until then, with no route to undo it.
        assert error(await root.post(URL, json={"not_before": int(time.time()) + 365 * 86400}), 400)["param"] == (
            "not_before"
        )
        unknown = error(await root.post(URL, json={"subject": made["id"], "tenant_id": "ten_nope"}), 404)
        assert unknown["param"] == "tenant_id"

        ended = await ok(await root.post(URL, json={"subject": made["id"], "reason": "left the team"}), 201)
        assert (ended["object"], ended["kind"], ended["subject"]) == ("console_session_end", "subject", made["id"])
        assert "session_id" not in ended
        # This replica applied it before answering: both of that key's sessions end, others go on.
        assert not any([await opens(app, c) for c in sessions])
        assert await opens(app, mine)
        assert await opens(app, await login(app, made["key"]))  # signing in again is let in
        listed = (await ok(await root.get(URL)))["data"]
        assert [r["id"] for r in listed] == [ended["id"]] and listed[0]["reason"] == "left the team"

        everyone = await ok(await root.post(URL, json={}), 201)
        assert everyone["kind"] == "all" and everyone["subject"] is None
        assert not await opens(app, mine)  # the org-admin's own session too

        trail = (await ok(await root.get("/admin/v1/audit/events", params={"kind": "admin_change"})))["data"]
        changes = [e["body"]["action"] for e in trail if e["body"]["action"].startswith("console_sessions")]
        assert changes == ["console_sessions.end", "console_sessions.end"]


async def test_without_storage_ending_sessions_is_a_501_that_says_why(monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    async with (
        running(single(identity=identity(ADMIN_ENV), server=open_door())) as app,
        client(app, ADMIN_KEY) as root,
    ):
        refused = error(await root.post(URL, json={}), 501)
        assert "storage" in refused["message"] and "revoke the key" in refused["message"]
