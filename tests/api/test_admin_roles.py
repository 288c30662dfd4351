"""Every admin route against callers that must not get through, in process (SQLite, then PostgreSQL).

Driven by the route registry, so a route added later is checked too: a member key (an ordinary key) has
`whoami` only; an auditor changes nothing; a tenant-admin or auditor of tenant A reaches nothing of
tenant B, whether B is named in the path, the body or the query (403), or B's object is named by its
id under A's path (404, as an id that does not exist: no object's existence leaks); and an org-wide
route (providers' credentials, contracts, config reload, the organisation's events, usage and state)
is an org-admin's. Every refusal is OpenAI's error envelope, and what B holds is unchanged afterwards.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from admin_http import error, ok, running
from builders import audit, database, identity, single
from multihome.api.admin.registry import BY_NAME, ROUTES
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
    "verify_trail",  # the whole organisation's trail: every tenant's counts, and a rehash of it all
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


async def test_a_tenant_admin_neither_changes_nor_deletes_a_policy_an_org_admin_set(world):
    """An org-admin's policy on a tenant, a team or a key (an "EU only" rule) is the organisation's: the
    tenant's admin gets 403 policy_set_by_org_admin, before its body is even checked, and the policy stays
    as it was. Its own policies it changes and deletes freely, until an org-admin changes one."""
    w = world
    admin, p = await _key(w, "tenant-admin"), f"{T}/{w.tenants['a']['tenant']}"
    team, key = w.tenants["a"]["teams"], w.tenants["a"]["keys"]
    eu = [{"effect": "allow", "data_zones": ["EU"], "description": "EU only"}]
    org = [
        await w.made(f"{p}/policies", {"scope": "tenant", "rules": eu}),
        await w.made(f"{p}/policies", {"scope": "team", "scope_id": team, "rules": eu}),
        await w.made(f"{p}/policies", {"scope": "key", "scope_id": key, "rules": eu}),
    ]
    changes = [
        ("PATCH", {"json": {"rules": [{"effect": "allow"}]}}, "change"),  # would widen it to everything
        ("PATCH", {"json": {"description": "relaxed"}}, "change"),
        ("PATCH", {"json": {"rules": [{"effect": "allow", "regions": []}]}}, "change"),  # 403 before the 400
        ("DELETE", {}, "delete"),
    ]
    for pid in org:
        for method, kw, doing in changes:
            err = error(await w.call(admin, method, f"{p}/policies/{pid}", **kw), 403)
            assert (err["code"], err["type"], err["param"]) == ("policy_set_by_org_admin", "permission_error", "id")
            assert f"Policy {pid} was set by an org-admin" in err["message"], err
            assert f"may not {doing} it" in err["message"], err
        kept = await ok(await w.call(ADMIN_KEY, "GET", f"{p}/policies/{pid}"))
        assert (kept["rules"]["egress"], kept["set_by_role"]) == (eu, "org-admin")

    for reader in (ADMIN_KEY, admin):  # who set each one shows in the list and in each policy
        listed = {x["id"]: x["set_by_role"] for x in (await ok(await w.call(reader, "GET", f"{p}/policies")))["data"]}
        assert {listed[i] for i in org} == {"org-admin"}, listed
    assert (await ok(await w.call(admin, "GET", f"{p}/policies/{org[0]}")))["set_by_role"] == "org-admin"

    # Its own: set, changed and deleted by the tenant-admin; an org-admin's change makes it the org-admin's.
    own = await ok(
        await w.call(admin, "POST", f"{p}/policies", json={"scope": "team", "scope_id": team, "rules": eu}), 201
    )
    assert own["set_by_role"] == "tenant-admin"
    mine = f"{p}/policies/{own['id']}"
    changed = await ok(await w.call(admin, "PATCH", mine, json={"description": "ours"}))
    assert (changed["description"], changed["set_by_role"]) == ("ours", "tenant-admin")
    taken = await ok(await w.call(ADMIN_KEY, "PATCH", mine, json={"description": "the org's now"}))
    assert taken["set_by_role"] == "org-admin"
    assert error(await w.call(admin, "DELETE", mine), 403)["code"] == "policy_set_by_org_admin"
    await ok(await w.call(ADMIN_KEY, "DELETE", mine))
    again = await ok(await w.call(admin, "POST", f"{p}/policies", json={"scope": "tenant", "rules": eu}), 201)
    await ok(await w.call(admin, "DELETE", f"{p}/policies/{again['id']}"))
    for pid in org:  # the org-admin changes and deletes its own
        await ok(await w.call(ADMIN_KEY, "DELETE", f"{p}/policies/{pid}"))


async def test_a_tenant_admin_cannot_delete_a_team_carrying_an_org_admins_policy(world):
    """Deleting a team deletes its policies; one an org-admin set still binds OIDC callers whose token names
    the team, so a tenant-admin may not delete the team under it (as for an org-admin's team budget)."""
    w = world
    admin, p = await _key(w, "tenant-admin"), f"{T}/{w.tenants['a']['tenant']}"
    rules = [{"effect": "deny", "regions": ["us-*"]}]
    ruled = await w.made(f"{p}/teams", {"name": "ruled"})
    pol = await w.made(f"{p}/policies", {"scope": "team", "scope_id": ruled, "rules": rules})
    err = error(await w.call(admin, "DELETE", f"{p}/teams/{ruled}"), 403)
    assert err["code"] == "policy_set_by_org_admin" and pol in err["message"], err
    await ok(await w.call(ADMIN_KEY, "GET", f"{p}/teams/{ruled}"))
    await ok(await w.call(ADMIN_KEY, "GET", f"{p}/policies/{pol}"))

    own = (await ok(await w.call(admin, "POST", f"{p}/teams", json={"name": "own"}), 201))["id"]
    body = {"scope": "team", "scope_id": own, "rules": rules}
    mine = (await ok(await w.call(admin, "POST", f"{p}/policies", json=body), 201))["id"]
    await ok(await w.call(admin, "DELETE", f"{p}/teams/{own}"))  # its own policy goes with its own team
    assert error(await w.call(ADMIN_KEY, "GET", f"{p}/policies/{mine}"), 404)["code"] == "not_found"
    await ok(await w.call(ADMIN_KEY, "DELETE", f"{p}/teams/{ruled}"))
    assert error(await w.call(ADMIN_KEY, "GET", f"{p}/policies/{pol}"), 404)["code"] == "not_found"


async def test_a_tenant_admins_allow_does_not_widen_an_org_admins_deny(world):
    """Policies compose by intersection: a tenant-admin's allow-everything beside the org-admin's deny-everything
    (the world's tenant policy) leaves the tenant refused, as explain shows once the new policy is in force."""
    import time

    w = world
    admin, a = await _key(w, "tenant-admin"), w.tenants["a"]
    own = (
        await ok(
            await w.call(
                admin, "POST", f"{T}/{a['tenant']}/policies", json={"scope": "tenant", "rules": [{"effect": "allow"}]}
            ),
            201,
        )
    )["id"]
    deadline = time.monotonic() + 30
    while True:
        decision = await ok(
            await w.call(admin, "POST", "/admin/v1/policy/explain", json={"tenant_id": a["tenant"], "model": "g"})
        )
        if own in {t["policy_id"] for t in decision["trace"]} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert {t["policy_id"] for t in decision["trace"]} >= {a["policies"], own}, decision
    assert (decision["allowed"], decision["code"], decision["deployments"]) == (False, "egress_denied", []), decision


async def test_explaining_the_policy_of_a_tenant_that_does_not_exist_is_a_404(world):
    """Was a 200 "allowed" with an empty trace: a typo in the tenant id looked like a tenant with no policy."""
    for tenant in ("ten_doesnotexist", "x" * 300):
        resp = await _explain_for(world, tenant)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found", resp.text
    assert (await _explain_for(world, world.tenants["a"]["tenant"])).status_code == 200


# The lists of a tenant's own resources (its history, usage, events and runs, outlives an offboarded tenant).
TENANT_LISTS = (
    "list_teams",
    "list_keys",
    "list_policies",
    "list_entitlements",
    "list_stateful_pins",
    "list_budgets",
    "list_mcp_servers",
    "list_memory_namespaces",
)


async def test_a_list_under_a_tenant_that_does_not_exist_is_a_404_that_another_tenants_admin_never_sees(world):
    """Was a 200 with an empty list: an org-admin's typo in the tenant id looked like a tenant with nothing in it.
    A tenant-admin or auditor of another tenant gets the same 403 whether the tenant exists or not."""
    w, a = world, world.tenants["a"]["tenant"]
    unknown = error(await w.call(ADMIN_KEY, "GET", f"{T}/ten_doesnotexist"), 404)  # the tenant itself, as before
    others = [await _key(w, "tenant-admin", "b"), await _key(w, "auditor", "b")]
    for route in (BY_NAME[name] for name in TENANT_LISTS):
        missing, existing = route.path.format(tenant="ten_doesnotexist"), route.path.format(tenant=a)
        err = error(await w.call(ADMIN_KEY, "GET", missing), 404)
        assert (err["code"], err["message"]) == (unknown["code"], unknown["message"]), (route.name, err)
        assert (await ok(await w.call(ADMIN_KEY, "GET", existing)))["object"] == "list"
        for key in others:
            refused = error(await w.call(key, "GET", missing), 403)
            assert refused == error(await w.call(key, "GET", existing), 403), (route.name, refused)


async def _explain_for(w: World, tenant: str) -> httpx.Response:
    return await w.call(ADMIN_KEY, "POST", "/admin/v1/policy/explain", json={"tenant_id": tenant, "model": "g"})


async def test_the_console_shows_who_set_each_policy_and_offers_no_change_of_it(world):
    """The tenant page lists each policy with who set it; it has no form that changes or deletes a policy, so a
    tenant-admin is never offered the change the admin API refuses it."""
    w = world
    admin, p = await _key(w, "tenant-admin"), f"{T}/{w.tenants['a']['tenant']}"
    own = (await ok(await w.call(admin, "POST", f"{p}/policies", json={"scope": "tenant", "rules": []}), 201))["id"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=w.app), base_url="http://gw") as browser:
        assert (await browser.post("/console/login", data={"key": admin})).status_code == 303
        page = await browser.get(f"/console/tenants/{w.tenants['a']['tenant']}")
        assert page.status_code == 200, page.text[:300]
    setters = re.findall(r'<td class="policy-setter">([^<]*)</td>', page.text)
    assert sorted(setters) == ["org-admin", "tenant-admin"], setters  # the world's policy, and this one
    assert "/policies" not in page.text and own not in page.text  # no form names a policy


async def test_budgets_say_who_set_them_in_the_list_and_the_console(world):
    """Each budget says who set it (`set_by_role`), in the list as in one budget's answer, and on the console's
    tenant page, as policies do: the world's budget is the org-admin's, one a tenant-admin sets its own."""
    w = world
    admin, a = await _key(w, "tenant-admin"), w.tenants["a"]
    p = f"{T}/{a['tenant']}"
    body = {"scope": "team", "scope_id": a["teams"], "amount": "3", "period": "day"}
    own = (await ok(await w.call(admin, "POST", f"{p}/budgets", json=body), 201))["id"]
    listed = {b["id"]: b["set_by_role"] for b in (await ok(await w.call(admin, "GET", f"{p}/budgets")))["data"]}
    assert listed == {a["budgets"]: "org-admin", own: "tenant-admin"}, listed
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=w.app), base_url="http://gw") as browser:
        assert (await browser.post("/console/login", data={"key": admin})).status_code == 303
        page = await browser.get(f"/console/tenants/{a['tenant']}")
        assert page.status_code == 200, page.text[:300]
    setters = re.findall(r'<td class="budget-setter">([^<]*)</td>', page.text)
    assert sorted(setters) == ["org-admin", "tenant-admin"], setters


@pytest.mark.parametrize("role", ["tenant-admin", "auditor"])
async def test_the_trail_s_verification_is_the_org_admin_s(world, role):
    """`GET /admin/v1/audit/verify` answers for every tenant's events (counts that, polled, tell one tenant the
    others' traffic) and re-hashes the whole trail: a tenant's roles get 403, and the console's Audit page
    tells them whose it is; an org-admin gets the answer."""
    w = world
    key = await _key(w, role)
    err = error(await w.call(key, "GET", "/admin/v1/audit/verify"), 403)
    assert (err["code"], err["type"]) == ("insufficient_role", "permission_error"), err
    answer = await ok(await w.call(ADMIN_KEY, "GET", "/admin/v1/audit/verify"))
    assert answer["object"] == "audit.verification" and answer["events"] > 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=w.app), base_url="http://gw") as browser:
        assert (await browser.post("/console/login", data={"key": key})).status_code == 303
        page = await browser.get("/console/audit/verification")
        assert page.status_code == 200, page.text[:300]
    assert "an org admin runs it" in page.text and "Chain verified" not in page.text, page.text[:500]
