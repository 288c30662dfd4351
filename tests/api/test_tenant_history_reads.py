"""A tenant's history (usage, admin events, audit trail, agent runs, stored state) is evidence and outlives the
tenant: under a deleted tenant's id it answers; under an id that never was a tenant's (a typo) it is a 404, as
the lists of a tenant's own resources are (docs/api.md "Paged lists"). The app in process, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from admin_http import error, ok
from builders import audit
from stored_app import STORES, param_world

pytestmark = pytest.mark.anyio
HISTORY = ("/admin/v1/tenants/{t}/usage", "/admin/v1/tenants/{t}/events", "/admin/v1/tenants/{t}/state")
HISTORY += ("/admin/v1/tenants/{t}/runs", "/admin/v1/audit/events?tenant={t}")


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    async with param_world(request, tmp_path, agent=True, audit=audit(tmp_path / "trail")) as parts:
        yield parts[0]


async def test_history_answers_for_a_deleted_tenant_and_is_a_404_for_one_that_never_was(world):
    w = world
    live, _ = await w.tenant("live")
    gone, _ = await w.tenant("gone")
    await ok(await w.call("DELETE", f"/admin/v1/tenants/{gone}"))
    for path in HISTORY:
        for tenant in (live, gone):
            await ok(await w.call("GET", path.format(t=tenant)))
        err = error(await w.call("GET", path.format(t="ten_never_was")), 404)
        assert err["code"] == "not_found" and "ten_never_was" in err["message"], (path, err)
    events = await ok(await w.call("GET", f"/admin/v1/tenants/{gone}/events"))
    assert [e["action"] for e in events["data"]][-1] == "tenant.delete", events
