"""The budgets admin API in the real app (in process, SQLite storage, audit trail on): RBAC, 400s
that name the field, 404/405/409, the audit trail and the change record, and the OpenAPI document."""

from __future__ import annotations

import httpx
import pytest
from openapi_spec_validator import validate

from admin_http import error, ok
from builders import audit, identity, price, single, sqlite, typed
from multihome.app import build_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-budget-api"


class Api:
    def __init__(self, app) -> None:
        self.app = app

    def client(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gw",
            headers={"authorization": f"Bearer {key}"},
        )


async def start(tmp_path, **sections) -> Api:
    cfg = single(
        storage=sqlite(tmp_path / "mh.db", refresh_s=0.05),
        identity=identity("MH_TEST_BUDGET_ADMIN"),
        audit=audit(tmp_path / "audit"),
        deployment_fields={"price": price(1, 2)},
        **sections,
    )
    app = build_app(typed(cfg))
    for service in app.services:
        await service.start()
    return Api(app)


async def stop(api: Api) -> None:
    for service in reversed(api.app.services):
        await service.close()


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_BUDGET_ADMIN", ADMIN_KEY)


@pytest.fixture
async def api(tmp_path):
    started = await start(tmp_path)
    yield started
    await stop(started)


async def test_budget_crud_rbac_and_bad_input(api):
    root = api.client(ADMIN_KEY)
    a = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    b = (await ok(await root.post("/admin/v1/tenants", json={"name": "globex"}), 201))["id"]
    team = (await ok(await root.post(f"/admin/v1/tenants/{a}/teams", json={"name": "ml"}), 201))["id"]

    async def key(tenant, roles):
        out = await ok(await root.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": roles}), 201)
        return out["id"], api.client(out["key"])

    member_id, _ = await key(a, ["member"])
    other_key, _ = await key(b, ["member"])
    _, admin_a = await key(a, ["tenant-admin"])
    _, auditor_a = await key(a, ["auditor"])
    _, admin_b = await key(b, ["tenant-admin"])
    url = f"/admin/v1/tenants/{a}/budgets"

    made = await ok(
        await admin_a.post(url, json={"scope": "key", "scope_id": member_id, "amount": "25.50", "period": "day"}), 201
    )
    assert made["id"].startswith("bud_") and made["object"] == "budget" and made["source"] == "admin"
    assert (made["scope"], made["scope_id"], made["amount"], made["currency"], made["period"], made["mode"]) == (
        "key",
        member_id,
        "25.5",
        "USD",
        "day",
        "hard",
    )
    tenant_budget = await ok(await root.post(url, json={"scope": "tenant", "amount": 100, "mode": "soft"}), 201)
    assert tenant_budget["scope_id"] == a and tenant_budget["period"] == "month"
    team_budget = await ok(
        await admin_a.post(url, json={"scope": "team", "scope_id": team, "amount": 5.25, "currency": "eur"}), 201
    )
    assert (team_budget["amount"], team_budget["currency"]) == ("5.25", "EUR")

    # Auditors read, and the list carries ids, the source and what the counters say.
    listed = (await ok(await auditor_a.get(url)))["data"]
    assert {(e["id"], e["source"], e["in_force"], e["spent_or_reserved"]) for e in listed} == {
        (made["id"], "admin", True, "0"),
        (tenant_budget["id"], "admin", True, "0"),
        (team_budget["id"], "admin", True, "0"),
    }
    narrowed = (await ok(await auditor_a.get(url, params={"key": member_id})))["data"]
    assert {e["id"] for e in narrowed} == {made["id"], tenant_budget["id"]}
    one = await ok(await auditor_a.get(f"{url}/{made['id']}"))
    assert (one["amount"], one["remaining"], one["in_force"], one["source"]) == ("25.5", "25.5", True, "admin")

    # Writes need tenant-admin (or org-admin) of this tenant.
    assert error(await auditor_a.post(url, json={"scope": "tenant", "amount": 1}), 403)["code"] == "insufficient_role"
    assert error(await auditor_a.patch(f"{url}/{made['id']}", json={"amount": 1}), 403)["code"] == "insufficient_role"
    assert error(await auditor_a.delete(f"{url}/{made['id']}"), 403)["code"] == "insufficient_role"
    assert error(await admin_b.post(url, json={"scope": "tenant", "amount": 1}), 403)["code"] == "other_tenant"
    assert error(await admin_b.get(url), 403)["code"] == "other_tenant"

    # Bad input: 400 naming the field, never a 500.
    bad = [
        (b"{not json", None, "JSON"),
        ({"scope": "org", "amount": 1}, "scope", "tenant, team, key"),
        ({"scope": "tenant"}, "amount", "amount"),
        ({"scope": "tenant", "amount": "-1"}, "amount", "greater than 0"),
        ({"scope": "tenant", "amount": "lots"}, "amount", "decimal"),
        ({"scope": "tenant", "amount": True}, "amount", "amount"),
        ({"scope": "tenant", "amount": "0.0000000001"}, "amount", "9 decimal places"),
        # Passed the places check through normalize(), which rounds it to 0: refused by the store as "not '0'",
        # without naming the field.
        ({"scope": "tenant", "amount": "1E-1000000000"}, "amount", "9 decimal places"),
        ({"scope": "tenant", "amount": 1, "currency": "dollars"}, "currency", "ISO 4217"),
        ({"scope": "tenant", "amount": 1, "period": "week"}, "period", "day, month, total"),
        ({"scope": "tenant", "amount": 1, "mode": "strict"}, "mode", "hard, soft"),
        ({"scope": "tenant", "amount": 1, "colour": "red"}, "colour", "unknown field"),
        ({"scope": "tenant", "scope_id": b, "amount": 1}, "scope_id", "tenant id"),
        ({"scope": "key", "amount": 1}, "scope_id", "required"),
        ([1, 2], None, "object"),
    ]
    for body, param, words in bad:
        resp = await admin_a.post(url, content=body) if isinstance(body, bytes) else await admin_a.post(url, json=body)
        err = error(resp, 400)
        assert err["param"] == param and words in err["message"], (body, err)
    err = error(await admin_a.patch(f"{url}/{made['id']}", json={}), 400)
    assert "amount and/or mode" in err["message"]
    assert error(await admin_a.patch(f"{url}/{made['id']}", json={"amount": 0}), 400)["param"] == "amount"
    tiny = error(await admin_a.patch(f"{url}/{made['id']}", json={"amount": "1E-1000000000"}), 400)
    assert tiny["param"] == "amount" and "9 decimal places" in tiny["message"]
    assert error(await admin_a.patch(f"{url}/{made['id']}", json={"mode": "x"}), 400)["param"] == "mode"

    # A team or key of another tenant, an unknown id, a second budget on one counter, a wrong method.
    err = error(await admin_a.post(url, json={"scope": "key", "scope_id": other_key, "amount": 1}), 404)
    assert err["param"] == "scope_id" and other_key in err["message"]
    err = error(await admin_a.post(url, json={"scope": "team", "scope_id": "team_nope", "amount": 1}), 404)
    assert err["param"] == "scope_id"
    for method in ("GET", "PATCH", "DELETE"):
        resp = await admin_a.request(method, f"{url}/bud_unknown", json={"amount": 1} if method == "PATCH" else None)
        assert error(resp, 404)["code"] == "not_found"
    same_counter = {"scope": "key", "scope_id": member_id, "amount": 99, "period": "day"}
    dup = error(await admin_a.post(url, json=same_counter), 409)
    assert dup["code"] == "conflict" and made["id"] in dup["message"]
    assert error(await admin_a.put(f"{url}/{made['id']}", json={}), 405)["code"] == "method_not_allowed"

    # Change, then remove.
    raised = await ok(await admin_a.patch(f"{url}/{made['id']}", json={"amount": "30", "mode": "soft"}))
    assert (raised["id"], raised["amount"], raised["mode"], raised["period"]) == (made["id"], "30", "soft", "day")
    assert (await ok(await auditor_a.get(f"{url}/{made['id']}")))["amount"] == "30"
    assert await ok(await admin_a.delete(f"{url}/{made['id']}")) == {
        "id": made["id"],
        "object": "budget.deleted",
        "deleted": True,
    }
    error(await auditor_a.get(f"{url}/{made['id']}"), 404)
    assert made["id"] not in {e["id"] for e in (await ok(await auditor_a.get(url)))["data"]}

    # Every change, and only those, is in the audit trail and in the change record, with the actor.
    trail = (await ok(await root.get("/admin/v1/audit/events", params={"kind": "admin_change", "tenant": a})))["data"]
    budget_changes = [
        (e["body"]["action"], e["body"]["object_id"]) for e in trail if e["body"]["object_type"] == "budget"
    ]
    assert budget_changes == [
        ("budget.create", made["id"]),
        ("budget.create", tenant_budget["id"]),
        ("budget.create", team_budget["id"]),
        ("budget.update", made["id"]),
        ("budget.delete", made["id"]),
    ]
    record = (await ok(await root.get(f"/admin/v1/tenants/{a}/events")))["data"]
    assert [(e["action"], e["object_id"]) for e in record if e["object_type"] == "budget"] == budget_changes


async def test_a_tenant_admin_may_tighten_but_never_lift_a_budget_an_org_admin_set(api):
    """An org-admin's budget is a cap: the tenant's own admin may lower it or make it hard, but not
    raise it, make it soft or delete it (403 naming the rule); its own budgets it manages freely,
    until an org-admin changes one, which makes that one a cap too."""
    root = api.client(ADMIN_KEY)
    a = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    team = (await ok(await root.post(f"/admin/v1/tenants/{a}/teams", json={"name": "ml"}), 201))["id"]
    made = await ok(await root.post(f"/admin/v1/tenants/{a}/keys", json={"name": "k", "roles": ["tenant-admin"]}), 201)
    admin_a = api.client(made["key"])
    url = f"/admin/v1/tenants/{a}/budgets"
    cap = await ok(await root.post(url, json={"scope": "tenant", "amount": "100"}), 201)
    soft_cap = await ok(
        await root.post(url, json={"scope": "tenant", "amount": "7", "period": "day", "mode": "soft"}), 201
    )
    assert cap["set_by_role"] == "org-admin"

    for change, param, words in [
        ({"amount": "200"}, "amount", "raise its amount from 100 to 200"),
        ({"mode": "soft"}, "mode", "make it soft"),
        ({"amount": "50", "mode": "soft"}, "amount", "make it soft"),
    ]:
        err = error(await admin_a.patch(f"{url}/{cap['id']}", json=change), 403)
        assert (err["code"], err["type"], err["param"]) == ("budget_set_by_org_admin", "permission_error", param)
        assert words in err["message"] and "set by an org-admin" in err["message"], err
    err = error(await admin_a.delete(f"{url}/{cap['id']}"), 403)
    assert err["code"] == "budget_set_by_org_admin" and "delete it" in err["message"]
    assert (await ok(await admin_a.get(f"{url}/{cap['id']}")))["amount"] == "100"  # nothing changed

    lowered = await ok(await admin_a.patch(f"{url}/{cap['id']}", json={"amount": "50"}))  # tightening is fine
    assert (lowered["amount"], lowered["set_by_role"]) == ("50", "org-admin")  # and it stays the org-admin's cap
    assert (
        error(await admin_a.patch(f"{url}/{cap['id']}", json={"amount": "80"}), 403)["code"]
        == "budget_set_by_org_admin"
    )
    assert (await ok(await admin_a.patch(f"{url}/{soft_cap['id']}", json={"mode": "hard"})))["mode"] == "hard"

    own = await ok(await admin_a.post(url, json={"scope": "team", "scope_id": team, "amount": "5"}), 201)
    assert own["set_by_role"] == "tenant-admin"
    assert (await ok(await admin_a.patch(f"{url}/{own['id']}", json={"amount": "9", "mode": "soft"})))["amount"] == "9"
    taken = await ok(await root.patch(f"{url}/{own['id']}", json={"amount": "8"}))  # an org-admin changed it
    assert taken["set_by_role"] == "org-admin"
    assert error(await admin_a.delete(f"{url}/{own['id']}"), 403)["code"] == "budget_set_by_org_admin"
    assert (await ok(await root.delete(f"{url}/{cap['id']}")))["deleted"] is True  # the org-admin may


async def test_openapi_document_describes_the_budget_routes(api):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://gw") as anon:
        doc = (await anon.get("/admin/v1/openapi.json")).json()
    validate(doc)
    listed = doc["paths"]["/admin/v1/tenants/{tenant}/budgets"]
    assert set(listed) == {"get", "post"}
    assert {p["name"] for p in listed["get"]["parameters"]} == {"tenant", "team", "key"}
    assert listed["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CreateBudget")
    one = doc["paths"]["/admin/v1/tenants/{tenant}/budgets/{id}"]
    assert set(one) == {"get", "patch", "delete"}
    assert one["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/UpdateBudget")
    assert {"scope", "amount"} <= set(doc["components"]["schemas"]["CreateBudget"]["required"])


async def test_a_budget_outranked_by_a_smaller_config_budget_is_listed_as_not_in_force(tmp_path):
    from multihome.storage import open_store

    store = await open_store(f"sqlite+aiosqlite:///{tmp_path}/mh.db", migrate=True)
    tenant = (await store.create_tenant("acme", actor="setup")).id
    await store.close()
    api = await start(
        tmp_path, metering={"budgets": [{"scope": "tenant", "id": tenant, "amount": "1", "period": "month"}]}
    )
    try:
        root = api.client(ADMIN_KEY)
        url = f"/admin/v1/tenants/{tenant}/budgets"
        big = await ok(await root.post(url, json={"scope": "tenant", "amount": "100"}), 201)
        listed = (await ok(await root.get(url)))["data"]
        assert [(e["id"], e["source"], e["amount"], e["in_force"]) for e in listed] == [
            (None, "config", "1", True),
            (big["id"], "admin", "100", False),
        ]
        assert (await ok(await root.get(f"{url}/{big['id']}")))["in_force"] is False
        await ok(await root.patch(f"{url}/{big['id']}", json={"amount": "0.5"}))  # now the smaller one
        listed = (await ok(await root.get(url)))["data"]
        assert [(e["id"], e["source"], e["amount"], e["in_force"]) for e in listed] == [
            (big["id"], "admin", "0.5", True)
        ]
    finally:
        await stop(api)
