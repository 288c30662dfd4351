"""Ending console sessions is in the hash-chained, signed audit trail (docs/audit.md `admin_change`,
docs/console.md "Ending sessions"): a logout (`console_session.logout`: who, whose session, when it was
issued) and an org-admin's cut-off (`console_sessions.end`: who, whose sessions, of which issuer and tenant,
the cut-off), written by the writer of every admin change, never the cookie or the session's id; and the
trail still verifies, live and after the gateway stopped, with its signing key."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from admin_http import ok, running
from builders import audit, database, identity, single
from console_browser import client, login, opens
from multihome.audit import verify_dir
from multihome.audit.keys import key_id_of
from multihome.storage import open_store

pytestmark = pytest.mark.anyio
ADMIN_ENV, AUDIT_ENV = "MH_TEST_CONSOLE_ENDS_AUDIT", "MH_TEST_CONSOLE_ENDS_AUDIT_KEY"
ADMIN_KEY = "mh-bootstrap-admin-key-for-console-ends-audit"
SEED = bytes(range(32, 64))
URL = "/admin/v1/console-session-ends"


async def _logout(app, cookie: str) -> None:
    async with client(app) as browser:
        browser.cookies.set("mh_console", cookie)
        page = await browser.get("/console/audit")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert (await browser.post("/console/logout", data={"csrf": csrf})).status_code == 303


async def test_a_logout_and_a_cut_off_are_in_the_signed_chain_and_it_verifies(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    monkeypatch.setenv(AUDIT_ENV, base64.b64encode(SEED).decode())
    trail = tmp_path / "audit"
    db = sqlite_database()
    cfg = single(storage=database(db), identity=identity(ADMIN_ENV), audit=audit(trail, signing_key_env=AUDIT_ENV))
    async with running(cfg) as app, client(app, ADMIN_KEY) as root:
        tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
        made = await ok(
            await root.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "ops", "roles": ["tenant-admin"]}), 201
        )
        cookie = await login(app, made["key"])
        await _logout(app, cookie)
        assert not await opens(app, cookie)
        cut = await ok(await root.post(URL, json={"subject": made["id"], "reason": "left the team"}), 201)

        events = (await ok(await root.get("/admin/v1/audit/events", params={"kind": "admin_change"})))["data"]
        mine = [e for e in events if e["body"]["action"].startswith("console_session")]
        assert [e["body"]["action"] for e in mine] == ["console_session.logout", "console_sessions.end"]
        logout, end = (e["body"] for e in mine)
        # Who logged out, whose session, of which tenant; before: no event at all.
        assert (logout["actor"], logout["tenant"], logout["object_type"]) == (made["id"], tenant, "console_session")
        assert logout["detail"]["subject"] == made["id"] and logout["detail"]["issuer"] == "api_key"
        assert logout["detail"]["everywhere"] is True and logout["detail"]["issued_at"]
        # Who cut off, whose sessions, the cut-off; before: only the method and path.
        assert (end["actor"], end["object_id"]) == ("bootstrap-admin", cut["id"])
        d = end["detail"]
        assert (d["subject"], d["issuer"], d["kind"], d["set_by_role"]) == (
            made["id"],
            "api_key",
            "subject",
            "org-admin",
        )
        assert d["not_before"] == cut["not_before"] and d["reason"] == "left the team"

        verified = await ok(await root.get("/admin/v1/audit/verify"))
        assert verified["ok"] and verified["events"] >= 4, verified  # a chain being written: warnings only
        assert {p["severity"] for p in verified["problems"]} <= {"warning"}, verified
        stored = await open_store(db)
        try:
            session_ids = [r.session_id for r in await stored.page_console_session_ends(1000) if r.kind == "session"]
        finally:
            await stored.close()
        assert len(session_ids) == 1 and session_ids[0]

    text = "".join(p.read_text() for p in Path(trail).glob("*.jsonl"))
    assert "console_session.logout" in text and "console_sessions.end" in text
    for secret in (cookie, made["key"], session_ids[0], ADMIN_KEY):  # never the cookie, a key, the session id
        assert secret not in text
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    report = verify_dir(str(trail), {key_id_of(public): public})
    assert report.ok and report.checkpoints > 0, [str(p) for p in report.problems]


async def test_a_logout_without_storage_is_in_the_trail_as_held_here_only(tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    from builders import open_door

    cfg = single(identity=identity(ADMIN_ENV), server=open_door(), audit=audit(tmp_path / "audit"))
    async with running(cfg) as app, client(app, ADMIN_KEY) as root:
        await _logout(app, await login(app, ADMIN_KEY))
        events = (await ok(await root.get("/admin/v1/audit/events", params={"kind": "admin_change"})))["data"]
        (logout,) = [e["body"] for e in events if e["body"]["action"] == "console_session.logout"]
        assert (logout["actor"], logout["detail"]["issuer"], logout["detail"]["everywhere"]) == (
            "bootstrap-admin",
            "static",
            False,
        )
        assert logout["object_id"] is None
