"""The console's route-explain form (docs/console.md "Routing") with a key id the tenant does not have: the
form's answer says so, as the admin API would (404), never the console's 500 page. In process, on SQLite."""

from __future__ import annotations

import re

import httpx
import pytest

from admin_http import running
from builders import identity, single, sqlite

pytestmark = pytest.mark.anyio
ADMIN_ENV = "MH_TEST_CONSOLE_EXPLAIN"
ADMIN_KEY = "mh-bootstrap-admin-key-for-console-explain"


async def test_an_unknown_key_id_is_the_answer_to_show_not_a_server_error(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    cfg = single(storage=sqlite(tmp_path / "mh.db"), identity=identity(ADMIN_ENV))
    async with running(cfg) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            tenant = (await browser.post("/admin/v1/tenants", headers=admin, json={"name": "acme"})).json()["id"]
            assert (await browser.post("/console/login", data={"key": ADMIN_KEY})).status_code == 303
            routing = await browser.get("/console/routing")
            csrf = re.search(r'name="csrf" value="([^"]+)"', routing.text).group(1)
            form = {"csrf": csrf, "tenant": tenant, "model": "g"}
            for key_id in ("key_nope", "x" * 300):
                page = await browser.post("/console/routing/explain", data={**form, "key_id": key_id})
                # Before: 500, "The console hit an unexpected error", and the storage error's traceback logged.
                assert page.status_code == 200, page.text[:500]
                refused = re.search(r'<p class="failed">Refused: (.*?)</p>', page.text, re.S)
                assert refused and "(not_found)" in refused.group(1), page.text[:500]
                assert "x" * 65 not in refused.group(1)  # a long id is echoed at most 64 characters
            assert "unexpected error" not in caplog.text
            key = await browser.post(f"/admin/v1/tenants/{tenant}/keys", headers=admin, json={"name": "app"})
            for asked in ({}, {"key_id": key.json()["id"]}):  # a described member, and the tenant's own key
                explained = await browser.post("/console/routing/explain", data={**form, **asked})
                assert explained.status_code == 200 and "Would attempt, in order" in explained.text
