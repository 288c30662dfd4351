"""Every admin route against callers that must not get through, in process (SQLite, then PostgreSQL).

Driven by the route registry, so a route added later is checked too: a member key (an ordinary key) has
`whoami` only; an auditor changes nothing; a tenant-admin or auditor of tenant A reaches nothing of
tenant B, whether B is named in the path, the body or the query (403), or B's object is named by its
id under A's path (404, as an id that does not exist: no object's existence leaks); and an org-wide
route (providers' credentials, contracts, config reload, the organisation's events, usage and state)
is an org-admin's. Every refusal is OpenAI's error envelope, and what B holds is unchanged afterwards.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from admin_http import error, ok, running
from builders import audit, database, identity, single
from multihome.api.admin.registry import ROUTES
from multihome.api.admin.route import Route
from multihome.crypto.backends.local import init_key_file

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-admin-roles"
T = "/admin/v1/tenants"
ORG_ROUTES = {  # routes that are the whole organisation's, not a tenant's
    "create_tenant",
    "update_tenant",
    "delete_tenant",
    "all_events",
    "org_usage",
    "org_state",
    "reload_config",
    "grant_entitlement",
    "revoke_entitlement",
    "create_stateful_pin",
    "revoke_stateful_pin",
    *(r.name for r in ROUTES if "/contracts" in r.path or "/provider-credentials" in r.path),
}
# Bodies that decode, for the routes whose handler checks the tenant named in the body, or that must reach
# the store to answer 404 for another tenant's object.
BODIES: dict[str, dict[str, Any]] = {
    "explain": {"model": "g"},
    "create_token_revocation": {"kind": "jti", "issuer": "nowhere", "jti": "j"},
    "update_budget": {"amount": "1"},
    "update_policy": {"description": "changed"},
    "update_mcp_server": {"description": "changed"},
}


class World:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.tenants: dict[str, dict[str, str]] = {}

    async def call(self, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gw") as c:
            resp = await c.request(method, path, headers={"authorization": f"Bearer {key}"}, **kw)
        assert resp.status_code < 500, resp.text
        return resp

    async def made(self, path: str, body: dict[str, Any], field: str = "id") -> str:
        return (await ok(await self.call(ADMIN_KEY, "POST", path, json=body), 201))[field]

    async def tenant(self, name: str) -> dict[str, str]:
        t = await self.made(T, {"name": name})
        p = f"{T}/{t}"
        ids = {
            "tenant": t,
            "teams": await self.made(f"{p}/teams", {"name": "team"}),
            "keys": await self.made(f"{p}/keys", {"name": "app"}),
            "policies": await self.made(f"{p}/policies", {"scope": "tenant", "rules": [{"effect": "deny"}]}),
            "budgets": await self.made(
                f"{p}/budgets", {"scope": "tenant", "amount": "5", "currency": "USD", "period": "day"}
            ),
            "entitlements": await self.made(
                f"{p}/entitlements", {"model_group": "g", "starts_on": "2026-01-01", "ends_on": "2099-01-01"}
            ),
            "stateful-pins": await self.made(f"{p}/stateful-pins", {"providers": ["p"]}),
            "mcp-servers": await self.made(f"{p}/mcp-servers", {"name": f"srv-{name}", "url": "https://x.test/mcp"}),
        }
        self.tenants[name] = ids
        return ids

    async def snapshot(self, ids: dict[str, str]) -> list[Any]:
        """What the org-admin reads of a tenant: its row and every object the test made in it."""
        p = f"{T}/{ids['tenant']}"
        out = [await ok(await self.call(ADMIN_KEY, "GET", p))]
        for kind, object_id in ids.items():
            if kind != "tenant":
                found = await ok(await self.call(ADMIN_KEY, "GET", f"{p}/{kind}/{object_id}"))
                out.append({k: v for k, v in found.items() if k not in ("spent_or_reserved", "remaining")})
        return out


@pytest.fixture
async def world(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("MH_TEST_ROLES_ADMIN", ADMIN_KEY)
    init_key_file(tmp_path / "kms.key")
    cfg = single(
        storage=database(db_url),
        identity=identity("MH_TEST_ROLES_ADMIN"),
        audit=audit(tmp_path / "audit"),
        kms={"local": {"key_file": str(tmp_path / "kms.key")}},
    )
    async with running(cfg) as app:
        w = World(app)
        await w.tenant("a")
        await w.tenant("b")
        yield w


async def _key(w: World, role: str, tenant: str = "a") -> str:
    path = f"{T}/{w.tenants[tenant]['tenant']}/keys"
    return (await ok(await w.call(ADMIN_KEY, "POST", path, json={"name": role, "roles": [role]}), 201))["key"]


def _path(route: Route, tenant: dict[str, str], objects: dict[str, str]) -> str:
    """The route's path with `tenant` in it and, for an object's route, the id of that kind in `objects`."""
    values = {"tenant": tenant["tenant"], "provider": "p"}
    parts = route.path.split("/")
    for name in ("id", "name"):
        if "{" + name + "}" in parts:
            kind = parts[parts.index("{" + name + "}") - 1]
            values[name] = objects.get(kind, f"{kind}_nope")
    return route.path.format(**values)


async def _ask(w: World, key: str, route: Route, path: str, tenant_id: str) -> httpx.Response:
    """Call the route; a tenant the route takes from its body or query is `tenant_id` there."""
    body = dict(BODIES.get(route.name, {})) if route.body is not None else None
    if body is not None and route.name in ("explain", "create_token_revocation"):
        body["tenant_id"] = tenant_id
    query = {"tenant": tenant_id} if "tenant" in route.query else None
    return await w.call(key, route.method, path, json=body, params=query)


async def test_a_member_key_has_whoami_only(world):
    w = world
    member, a = await _key(w, "member"), w.tenants["a"]
    for route in ROUTES:
        resp = await _ask(w, member, route, _path(route, a, a), a["tenant"])
        if route.name == "whoami":
            assert (await ok(resp))["roles"] == ["member"]
            continue
        err = error(resp, 403)
        assert err["code"] == "insufficient_role" and err["type"] == "permission_error", (route.name, err)


async def test_an_auditor_changes_nothing(world):
    w = world
    auditor, a = await _key(w, "auditor"), w.tenants["a"]
    before = await w.snapshot(a)
    changes = [r for r in ROUTES if r.event is not None and r.name != "list_captures"]  # reading captures is audited
    assert len(changes) > 20
    for route in changes:
        err = error(await _ask(w, auditor, route, _path(route, a, a), a["tenant"]), 403)
        assert err["code"] == "insufficient_role", (route.name, err)
    assert await w.snapshot(a) == before


@pytest.mark.parametrize("role", ["tenant-admin", "auditor"])
async def test_nothing_of_another_tenant_is_reached(world, role):
    w = world
    key, a, b = await _key(w, role), w.tenants["a"], w.tenants["b"]
    before = await w.snapshot(b)
    for route in ROUTES:
        if route.name in ("whoami", "list_tenants"):
            continue
        # B named in the path (its objects by their ids), or in the body or query of a route without a tenant.
        resp = await _ask(w, key, route, _path(route, b, b), b["tenant"])
        if route.name == "reembed_memory_namespace" and role == "tenant-admin":
            assert error(resp, 404)["code"] == "not_found"  # another tenant's namespaces are not found
            continue
        if route.name == "verify_trail":
            continue  # the same organisation-wide integrity answer for every reader (docs/api.md)
        if "{tenant}" not in route.path and "{id}" in route.path and resp.status_code == 404:
            assert error(resp, 404)["code"] == "not_found"  # a token revocation by id: the caller's tenant's only
            continue
        err = error(resp, 403)
        assert err["code"] in ("other_tenant", "insufficient_role"), (route.name, err)
        if route.name in ORG_ROUTES or role == "auditor" and route.event is not None and route.name != "list_captures":
            assert err["code"] == "insufficient_role", (route.name, err)
        # B's objects by their ids under A's own path: not found, as if they did not exist.
        if "{id}" in route.path or "{name}" in route.path:
            resp = await _ask(w, key, route, _path(route, a, b), a["tenant"])
            if resp.status_code == 403:  # a route this role may not call at all, whatever the id
                assert error(resp, 403)["code"] == "insufficient_role", route.name
                continue
            err = error(resp, 404)
            assert err["code"] == "not_found" and b["tenant"] not in err["message"], (route.name, err)
    assert await w.snapshot(b) == before
    listed = (await ok(await w.call(key, "GET", T)))["data"]
    assert [t["id"] for t in listed] == [a["tenant"]]


async def test_a_tenant_admin_cannot_delete_a_team_an_org_admin_capped(world):
    """Deleting a team deletes its budgets; a team budget an org-admin set is a cap a tenant-admin may not lift
    (it still binds OIDC callers whose token names the team), so neither may it delete the team under it."""
    w = world
    admin, p = await _key(w, "tenant-admin"), f"{T}/{w.tenants['a']['tenant']}"
    budget = {"scope": "team", "amount": "5", "currency": "USD", "period": "day"}
    capped = await w.made(f"{p}/teams", {"name": "capped"})
    cap = await w.made(f"{p}/budgets", {**budget, "scope_id": capped})
    err = error(await w.call(admin, "DELETE", f"{p}/teams/{capped}"), 403)
    assert err["code"] == "budget_set_by_org_admin" and cap in err["message"], err
    await ok(await w.call(ADMIN_KEY, "GET", f"{p}/teams/{capped}"))
    await ok(await w.call(ADMIN_KEY, "GET", f"{p}/budgets/{cap}"))

    # Its own team budget goes with its team; the org-admin deletes the capped one.
    own = (await ok(await w.call(admin, "POST", f"{p}/teams", json={"name": "own"}), 201))["id"]
    mine = (await ok(await w.call(admin, "POST", f"{p}/budgets", json={**budget, "scope_id": own}), 201))["id"]
    await ok(await w.call(admin, "DELETE", f"{p}/teams/{own}"))
    assert error(await w.call(ADMIN_KEY, "GET", f"{p}/budgets/{mine}"), 404)["code"] == "not_found"
    await ok(await w.call(ADMIN_KEY, "DELETE", f"{p}/teams/{capped}"))
    assert error(await w.call(ADMIN_KEY, "GET", f"{p}/budgets/{cap}"), 404)["code"] == "not_found"


async def test_a_tenant_admin_sets_no_budget_or_policy_on_a_key_it_could_not_have_issued(world):
    """A cap or a deny on an auditor's or org-admin's key is a change to that key: an org-admin's to make."""
    w = world
    admin, p = await _key(w, "tenant-admin"), f"{T}/{w.tenants['a']['tenant']}"
    keys = {}
    for role in ("auditor", "org-admin", "member"):
        keys[role] = (
            await ok(await w.call(ADMIN_KEY, "POST", f"{p}/keys", json={"name": role, "roles": [role]}), 201)
        )["id"]
    budget = {"scope": "key", "amount": "1", "currency": "USD", "period": "day"}
    policy = {"scope": "key", "rules": [{"effect": "deny"}]}
    for role in ("auditor", "org-admin"):
        for kind, body in (("budgets", budget), ("policies", policy)):
            resp = await w.call(admin, "POST", f"{p}/{kind}", json={**body, "scope_id": keys[role]})
            err = error(resp, 403)
            assert err["code"] == "insufficient_role" and err["param"] == "scope_id", err
            assert f"Only an org-admin can set a budget or policy on {role} keys" in err["message"], err
    for kind in ("budgets", "policies"):  # nothing was stored
        stored = (await ok(await w.call(ADMIN_KEY, "GET", f"{p}/{kind}")))["data"]
        assert not [x for x in stored if x["scope_id"] in (keys["auditor"], keys["org-admin"])], stored
    held = {}
    for kind, body in (("budgets", budget), ("policies", policy)):
        await ok(await w.call(admin, "POST", f"{p}/{kind}", json={**body, "scope_id": keys["member"]}), 201)
        held[kind] = await w.made(f"{p}/{kind}", {**body, "scope_id": keys["auditor"]})  # the org-admin's
        err = error(await w.call(admin, "POST", f"{p}/{kind}", json={**body, "scope_id": "key_nope"}), 404)
        assert err["code"] == "not_found", err

    # The org-admin's policy on the auditor's key: the tenant-admin neither changes nor deletes it.
    pol = f"{p}/policies/{held['policies']}"
    for method, kw in (("PATCH", {"json": {"rules": []}}), ("DELETE", {})):
        err = error(await w.call(admin, method, pol, **kw), 403)
        assert err["code"] == "insufficient_role" and err["param"] == "scope_id", err
    assert (await ok(await w.call(ADMIN_KEY, "GET", pol)))["rules"]["egress"] == [{"effect": "deny"}]
