"""A NUL in an admin API query value or body names nothing (PostgreSQL's text refuses one): a 400, on every
backend, before any read. Was a 500 on PostgreSQL for a keys page's `?after=` with a NUL after its first
character (a NUL-led one was refused as an unknown key first), the revocations' `?tenant=`, and an id in a body
(a key's `team_id`, a policy's or budget's `scope_id`, a revocation's `tenant_id`, explain's `key_id`)."""

from __future__ import annotations

import pytest

from admin_http import error
from stored_app import STORES, StoredWorld, store_url, stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-query-nul"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_QUERY_NUL", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    async with stored_app(url, "MH_TEST_QUERY_NUL") as (client, app):
        yield StoredWorld(client, url, ADMIN_KEY, app)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/admin/v1/tenants/{tenant}/keys", "after"),
        ("/admin/v1/token-revocations", "tenant"),
        ("/admin/v1/tenants/{tenant}/events", "after"),
        ("/admin/v1/tenants/{tenant}/usage", "group_by"),
    ],
)
async def test_a_nul_in_a_query_value_is_a_400_naming_the_parameter(world, path, param):
    tenant, _ = await world.tenant("acme")
    resp = await world.call("GET", path.format(tenant=tenant), params={param: "key_a\u0000b"})
    err = error(resp, 400)
    assert err["param"] == param and "NUL" in err["message"], err


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/v1/tenants/{tenant}/keys", {"name": "k", "team_id": "team_a\u0000b"}),
        ("/admin/v1/tenants/{tenant}/policies", {"scope": "team", "scope_id": "team_a\u0000b", "rules": []}),
        (
            "/admin/v1/tenants/{tenant}/budgets",
            {"scope": "key", "scope_id": "key_a\u0000b", "amount": "5", "period": "day", "mode": "hard"},
        ),
        ("/admin/v1/token-revocations", {"kind": "subject", "issuer": "x", "subject": "s", "tenant_id": "a\u0000b"}),
        ("/admin/v1/policy/explain", {"tenant_id": "{tenant}", "model": "g", "key_id": "key_a\u0000b"}),
    ],
)
async def test_a_nul_in_a_body_is_a_400_before_anything_is_read(world, path, body):
    tenant, _ = await world.tenant("acme")
    body = {k: v.format(tenant=tenant) if isinstance(v, str) else v for k, v in body.items()}
    err = error(await world.call("POST", path.format(tenant=tenant), json=body), 400)
    named_field = next(k for k, v in body.items() if isinstance(v, str) and "\x00" in v)
    assert "U+0000" in err["message"] and err["param"] == named_field, err
    # A backslash then "u0000" is text, not a NUL: not refused for it.
    named = await world.call("POST", f"/admin/v1/tenants/{tenant}/teams", json={"name": "a\\u0000b"})
    assert named.status_code == 201, named.text
