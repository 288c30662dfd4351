"""docs/api.md "Admin API": everything except `whoami`, `policy/explain`, `GET …/budgets` and the config
reload needs storage; on a gateway without it each other admin route answers 501
`storage_not_configured` to an org-admin (the audit routes: when the audit trail is off, the same code),
never a 500 or a 404. Every route of the registry is asked, in process."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from admin_http import running
from builders import api_keys, identity, single
from multihome.api.admin import registry

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-without-storage"
SERVED = {
    ("GET", "/admin/v1/whoami"),
    ("POST", "/admin/v1/policy/explain"),
    ("GET", "/admin/v1/tenants/{tenant}/budgets"),
    ("POST", "/admin/v1/config/reload"),
}

# Bodies the routes take, so the refusal is the storage's and not the body's.
VALID = {
    ("POST", "/admin/v1/tenants"): {"name": "acme"},
    ("POST", "/admin/v1/tenants/{tenant}/teams"): {"name": "ml"},
    ("POST", "/admin/v1/tenants/{tenant}/keys"): {"name": "ci"},
    ("POST", "/admin/v1/tenants/{tenant}/policies"): {"scope": "tenant", "rules": [{"effect": "deny"}]},
    ("POST", "/admin/v1/tenants/{tenant}/budgets"): {"scope": "tenant", "amount": "5", "period": "day"},
}


async def test_each_admin_route_but_the_documented_few_says_storage_is_not_configured(monkeypatch):
    monkeypatch.setenv("MH_TEST_NOSTORE_ADMIN", ADMIN_KEY)
    doc = " ".join((Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text().split())
    assert "Everything except `whoami`, `policy/explain`, `GET …/budgets` and `config/reload` needs storage" in doc
    monkeypatch.setenv("MH_TEST_NOSTORE_CLIENT", "mh-client-key-without-storage")
    cfg = single(server=api_keys("MH_TEST_NOSTORE_CLIENT"), identity=identity("MH_TEST_NOSTORE_ADMIN"))
    async with running(cfg) as app:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ) as admin:
            for route in registry.ROUTES:
                if (route.method, route.path) in SERVED or route.role == "content":
                    continue  # captures: an org-admin is refused them (403) whatever is configured
                path = re.sub(r"\{[a-z_]+\}", "x1", route.path)
                body = VALID.get((route.method, route.path), {} if route.method in ("POST", "PUT", "PATCH") else None)
                resp = await admin.request(route.method, path, json=body)
                if resp.status_code == 400 and route.body is not None and (route.method, route.path) not in VALID:
                    continue  # the empty body is refused first; the routes of VALID show the order otherwise
                assert resp.status_code == 501, (route.method, route.path, resp.status_code, resp.text[:200])
                assert resp.json()["error"]["code"] == "storage_not_configured", (route.method, route.path)
