"""An entitlement names a model group of the gateway's config, as a contract does: one for a group the config
has not (or a family glob that covers none) would license no call, so its grant is a 400 naming the field and
the known groups, as a contract's is. A stored grant whose group a later config dropped still loads: only a
write is checked. The app in process on SQLite and PostgreSQL (its config has the one group `g`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from admin_http import error, ok
from stored_app import STORES, StoredWorld, param_world, until

pytestmark = pytest.mark.anyio
T = "/admin/v1/tenants"
GRANT = {"starts_on": "2025-01-01", "ends_on": "2099-12-31"}


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[StoredWorld]:
    async with param_world(request, tmp_path) as (w, _, _):
        yield w


async def test_an_entitlement_for_a_model_group_the_config_lacks_is_refused_as_a_contract_is(world):
    tenant, _ = await world.tenant("acme")
    grants = f"{T}/{tenant}/entitlements"
    for group in ("gg", "x*", "G"):
        err = error(await world.call("POST", grants, json={**GRANT, "model_group": group}), 400)
        assert (err["param"], err["code"]) == ("model_group", "invalid_value"), err
        assert f"Invalid entitlement: model_group '{group}' is no model group of the gateway's config" in err["message"]
        assert err["message"].endswith("(known: g)."), err
    contract = {"kind": "revenue_share", "id": "rs", "rate": "0.1", "basis": {"model_groups": ["gg"]}, **GRANT}
    err = error(await world.call("POST", "/admin/v1/contracts", json=contract), 400)
    assert "is no model group of the gateway's config" in err["message"] and err["message"].endswith("(known: g).")
    assert (await ok(await world.call("GET", grants)))["data"] == []
    for group in ("g", "g*"):  # the group, and a family that covers it
        await ok(await world.call("POST", grants, json={**GRANT, "model_group": group}), 201)


async def test_a_stored_entitlement_for_a_group_the_config_dropped_still_loads(world):
    tenant, key = await world.tenant("acme")
    grants = f"{T}/{tenant}/entitlements"
    made = await ok(await world.call("POST", grants, json={**GRANT, "model_group": "g"}), 201)
    await world.sql("UPDATE entitlements SET model_group = 'dropped' WHERE id = :id", {"id": made["id"]})
    await world.sql("UPDATE state_version SET version = version + 1 WHERE id = 1")  # replicas reload

    async def listed_as_dropped() -> bool:
        rows = (await ok(await world.call("GET", grants)))["data"]
        return [r["model_group"] for r in rows] == ["dropped"]

    await until(listed_as_dropped, "the grant of a dropped group is listed", 15)
    chat = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    await ok(await world.call("POST", "/v1/chat/completions", key, json=chat))
