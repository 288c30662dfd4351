"""The admin API decodes bodies in the same place as the front doors: JSON nested far past the
interpreter's recursion limit is a 400 that says so, not a 500 (issue 11, finding 10). In process,
SQLite storage; the front doors' side is tests/e2e/test_front_door_input.py."""

from __future__ import annotations

import httpx
import pytest

from admin_http import error, ok, running
from builders import identity, single, sqlite

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-deep-nesting"
DEPTH = 10_000


@pytest.fixture
async def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_DEEP_ADMIN", ADMIN_KEY)
    async with running(single(storage=sqlite(tmp_path / "mh.db"), identity=identity("MH_TEST_DEEP_ADMIN"))) as app:
        yield httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
        )


@pytest.mark.parametrize("opened, closed", [("[" * DEPTH, "]" * DEPTH), ('{"":' * DEPTH, "1" + "}" * DEPTH)])
async def test_deeply_nested_metadata_is_a_400(root, opened, closed):
    body = ('{"name": "acme", "metadata": {"x": ' + opened + closed + "}}").encode()
    refused = error(await root.post("/admin/v1/tenants", content=body), 400)
    assert refused["code"] == "nested_too_deeply" and "nested too deeply" in refused["message"]
    tenant = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    body = ('{"name": "app", "metadata": {"x": ' + opened + closed + "}}").encode()
    refused = error(await root.post(f"/admin/v1/tenants/{tenant}/keys", content=body), 400)
    assert refused["code"] == "nested_too_deeply"


async def test_a_body_that_is_not_an_object_says_so(root):
    refused = error(await root.post("/admin/v1/tenants", content=b"[1, 2]"), 400)
    assert refused["message"] == "Request body must be a JSON object."
