"""A NUL in an admin API query value names nothing (PostgreSQL's text refuses one): a 400 naming the parameter,
on every backend, before any read. Was a 500 on PostgreSQL for a keys page's `?after=` with a NUL after its
first character (a NUL-led one was refused as an unknown key first) and for the revocations' `?tenant=`."""

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
