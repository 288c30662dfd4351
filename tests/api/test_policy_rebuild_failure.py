"""Stored policy data the gateway cannot read (a hand-edited row, one written by another version) fails
closed for the tenant it belongs to, and only for it, on the real path: the app in process on SQLite, an
OpenAI simulator upstream, the rows changed in the database (SQLite and PostgreSQL) as an operator's
SQL would change them.

The change that breaks a row also revokes that tenant's grant, in one transaction: the next calls must
see the revocation (a reload that failed used to leave the previous decisions in force), and the other
tenant keeps being served."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from admin_http import error, ok
from multihome.api.policy_gate import PolicyGate
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal
from stored_app import STORES, store_url, stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-policy-rebuild"
TODAY = dt.datetime.now(dt.UTC).date()
WEEK = dt.timedelta(days=7)  # grants outlast a test run over midnight (UTC)
CHAT = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_REBUILD_ADMIN", ADMIN_KEY)


class World:
    def __init__(self, admin: httpx.AsyncClient, url: str) -> None:
        self.admin, self.url = admin, url
        self.keys: dict[str, str] = {}
        self.grants: dict[str, str] = {}
        self.policies: dict[str, str] = {}

    async def tenant(self, name: str, rules: list[dict]) -> str:
        """A tenant with a member key, a grant for the licensed group and a tenant policy of `rules`."""
        tenant = (await ok(await self.admin.post("/admin/v1/tenants", json={"name": name}), 201))["id"]
        t = f"/admin/v1/tenants/{tenant}"
        self.keys[tenant] = (await ok(await self.admin.post(f"{t}/keys", json={"name": "k"}), 201))["key"]
        grant = {"model_group": "g", "starts_on": str(TODAY - dt.timedelta(days=1)), "ends_on": str(TODAY + WEEK)}
        self.grants[tenant] = (await ok(await self.admin.post(f"{t}/entitlements", json=grant), 201))["id"]
        policy = await ok(await self.admin.post(f"{t}/policies", json={"scope": "tenant", "rules": rules}), 201)
        self.policies[tenant] = policy["id"]
        return tenant

    async def call(self, tenant: str) -> httpx.Response:
        return await self.admin.post(
            "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {self.keys[tenant]}"}
        )

    async def corrupt(self, tenant: str, table: str, row_id: str, column: str, raw: str, revoke: bool = True) -> None:
        """In one transaction, as hand-edited SQL would: `column` of the row set to the raw JSON text
        `raw`, the tenant's grant revoked (unless `revoke` is false), the state version moved on (so
        every replica reloads)."""
        value = "CAST(:raw AS JSON)" if self.url.startswith("postgresql") else ":raw"
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(f"UPDATE {table} SET {column} = {value} WHERE id = :id"), {"raw": raw, "id": row_id}
                )
                if revoke:
                    revoked = "UPDATE entitlements SET revoked_at = created_at WHERE id = :id"
                    await conn.execute(sa.text(revoked), {"id": self.grants[tenant]})
                await conn.execute(sa.text("UPDATE state_version SET version = version + 1 WHERE id = 1"))
        finally:
            await engine.dispose()


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with stored_app(url, "MH_TEST_REBUILD_ADMIN", headers, group_fields={"requires_entitlement": True}) as (
        admin,
        app,
    ):
        yield World(admin, url), app


async def refused_soon(w: World, tenant: str) -> dict:
    """The tenant's calls are refused within a generous deadline (the snapshot reloads every 0.05 s)."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        resp = await w.call(tenant)
        if resp.status_code != 200:
            return error(resp, 403)
        assert asyncio.get_running_loop().time() < deadline, "the tenant was still served after its grant was revoked"
        await asyncio.sleep(0.05)


ALLOW_US = [{"effect": "allow", "data_zones": ["US"]}]
DENY_US = [{"effect": "deny", "data_zones": ["US"]}]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("null", id="rules-null"),  # used to stop the snapshot from reloading at all
        pytest.param(json.dumps({"egress": None}), id="egress-null"),  # used to refuse every tenant
        pytest.param(json.dumps({"egress": [{"effect": "allow", "data_zones": "US"}]}), id="zones-not-a-list"),
        pytest.param(json.dumps({"egress": [{"effect": "allow", "zone": ["US"]}]}), id="unknown-field"),
        pytest.param(json.dumps(ALLOW_US), id="rules-a-list"),  # used to be read as {"effect": "data_zones"}
        pytest.param('"allow"', id="rules-a-string"),
    ],
)
async def test_an_unreadable_policy_row_refuses_its_tenant_only_and_a_revocation_in_the_same_change_applies(
    world, raw, caplog
):
    w, _app = world
    acme = await w.tenant("acme", ALLOW_US)
    other = await w.tenant("other", ALLOW_US)
    assert (await w.call(acme)).status_code == 200
    assert (await w.call(other)).status_code == 200

    await w.corrupt(acme, "policies", w.policies[acme], "rules", raw)
    err = await refused_soon(w, acme)
    assert (await w.call(other)).status_code == 200, "one tenant's unreadable row refused another tenant"
    assert err["code"] == "policy_unavailable", err
    assert "policy data" in err["message"] and w.policies[acme] in err["message"]
    for _ in range(3):  # call after call
        assert (await w.call(other)).status_code == 200
        assert (await w.call(acme)).status_code == 403
    # An operator learns which tenant and row, once per reload (not once per call).
    lines = [r.getMessage() for r in caplog.records if r.name == "multihome.policy" and r.levelname == "ERROR"]
    assert len([line for line in lines if acme in line and w.policies[acme] in line]) == 1, lines

    # The tenant admin can mend the row through the admin API (replace its rules, or delete it).
    t = f"/admin/v1/tenants/{acme}"
    await ok(await w.admin.patch(f"{t}/policies/{w.policies[acme]}", json={"rules": ALLOW_US}))
    grant = {"model_group": "g", "starts_on": str(TODAY - WEEK), "ends_on": str(TODAY + WEEK)}
    await ok(await w.admin.post(f"{t}/entitlements", json=grant), 201)
    deadline = asyncio.get_running_loop().time() + 15
    while (await w.call(acme)).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "the mended tenant was never served again"
        await asyncio.sleep(0.05)


async def test_listing_an_unreadable_policy_row_does_not_fail(world):
    """The admin API still lists and shows the row (so an admin can see what to fix), never a 500."""
    w, _app = world
    acme = await w.tenant("acme", ALLOW_US)
    await w.corrupt(acme, "policies", w.policies[acme], "rules", "null")
    t = f"/admin/v1/tenants/{acme}"
    listed = await ok(await w.admin.get(f"{t}/policies"))
    assert [p["id"] for p in listed["data"]] == [w.policies[acme]]
    await ok(await w.admin.get(f"{t}/policies/{w.policies[acme]}"))
    await ok(await w.admin.delete(f"{t}/policies/{w.policies[acme]}"))


async def test_a_deny_stored_as_a_bare_list_is_not_read_as_no_rules(world):
    """A row holding its rules as a bare list (not {"egress": [...]}), as an older writer or a hand edit
    could leave it: it used to be read through dict(), which made a two-field deny {"effect": "data_zones"},
    no egress rules at all, and the tenant was served where its policy denies."""
    w, _app = world
    acme = await w.tenant("acme", DENY_US)
    assert error(await w.call(acme), 403)["code"] == "egress_denied"
    await w.corrupt(acme, "policies", w.policies[acme], "rules", json.dumps(DENY_US), revoke=False)
    deadline = asyncio.get_running_loop().time() + 15
    while (err := error(await w.call(acme), 403))["code"] == "egress_denied":
        assert asyncio.get_running_loop().time() < deadline, "the change was never applied"
        await asyncio.sleep(0.05)
    assert err["code"] == "policy_unavailable", err


@pytest.mark.parametrize(
    ("column", "raw"),
    [
        pytest.param("data_zones", "[5]", id="zones-not-strings"),  # used to fail every rebuild, one per call
        pytest.param("providers", "5", id="providers-a-number"),  # used to stop the snapshot from reloading
    ],
)
async def test_an_unreadable_pin_refuses_its_tenants_stateful_work_only(world, column, raw, monkeypatch):
    w, app = world
    gate, group = app.pipeline.gate, app.catalog.groups["g"]
    acme = await w.tenant("acme", ALLOW_US)
    other = await w.tenant("other", ALLOW_US)
    pins = {}
    for tenant in (acme, other):
        pin = {"providers": ["p"], "work": ["background"]}
        made = await ok(await w.admin.post(f"/admin/v1/tenants/{tenant}/stateful-pins", json=pin), 201)
        pins[tenant] = made["id"]

    def admit(tenant: str, work: str | None) -> str:
        try:
            gate.admit(Principal(tenant=tenant, subject="s", source="key"), group, "responses", work=work)
        except ApiError as err:
            assert err.status == 403
            return err.body.code or ""
        return "admitted"

    applied = 0
    take = PolicyGate._take_pins

    def counted(self, snap):  # counts how often the gate applies a snapshot's pins; behaves as before
        nonlocal applied
        applied += 1
        return take(self, snap)

    deadline = asyncio.get_running_loop().time() + 15
    while admit(acme, "background") != "admitted" or admit(other, "background") != "admitted":
        assert asyncio.get_running_loop().time() < deadline, "the pins never applied"
        await asyncio.sleep(0.05)
    monkeypatch.setattr(PolicyGate, "_take_pins", counted)
    await w.corrupt(acme, "stateful_pins", pins[acme], column, raw, revoke=False)
    deadline = asyncio.get_running_loop().time() + 15
    while (code := admit(acme, "background")) == "admitted":  # not served unpinned, nor under the old pin
        assert asyncio.get_running_loop().time() < deadline, "stateful work was still served under the old pins"
        await asyncio.sleep(0.05)
    assert code == "policy_unavailable"
    assert admit(acme, None) == "admitted"  # stateless calls read no pin
    assert admit(other, "background") == admit(other, None) == "admitted"
    settled = applied
    for _ in range(20):  # no rebuild per call: the next change of stored data tries again
        admit(acme, "background")
        admit(other, None)
        await asyncio.sleep(0)
    assert applied == settled


HOSTILE_RULES = [
    None,
    {"egress": None},
    {"egress": [{"effect": "allow"}]},
    "allow",
    [None],
    [{"effect": "allow", "data_zones": "US"}],
    [{"effect": "allow", "data_zones": [5]}],
    [{"effect": "allow", "data_zones": [None]}],
    [{"effect": "allow", "data_zones": []}],
    [{"effect": "allow", "data_zones": [""]}],
    [{"effect": "allow", "data_zones": ["*US"]}],
    [{"effect": "allow", "data_zones": ["U\u0000S"]}],
    [{"effect": "allow", "zone": ["US"]}],
    [{"effect": "maybe"}],
    [{"effect": "allow", "data_zones": {"US": 1}}],
    [{"effect": "allow", "description": 5}],
    [{"effect": "allow", "regions": ["r"] * 101}],
    [{"effect": "allow", "data_zones": ["US"]}] * 101,
]


async def test_a_tenant_admin_cannot_store_rules_that_break_the_rebuild(world):
    """What a hostile tenant admin sends to the policy API is refused with a 4xx up front, never stored:
    the other tenant is served throughout, and so is the admin's own tenant (nothing it sent was kept)."""
    w, _app = world
    acme = await w.tenant("acme", ALLOW_US)
    other = await w.tenant("other", ALLOW_US)
    t = f"/admin/v1/tenants/{acme}"
    made = await ok(await w.admin.post(f"{t}/keys", json={"name": "admin", "roles": ["tenant-admin"]}), 201)
    hostile = {"authorization": f"Bearer {made['key']}"}
    # Its own policy to change: the org-admin's (w.policies) it may not change at all (403 policy_set_by_org_admin).
    own = await ok(
        await w.admin.post(f"{t}/policies", json={"scope": "tenant", "rules": ALLOW_US}, headers=hostile), 201
    )
    policy = f"{t}/policies/{own['id']}"
    for rules in HOSTILE_RULES:
        for method, url, body in (
            ("POST", f"{t}/policies", {"scope": "tenant", "rules": rules}),
            ("POST", f"{t}/policies", {"scope": "team", "scope_id": "nope", "rules": rules}),
            ("PATCH", policy, {"rules": rules}),
        ):
            resp = await w.admin.request(method, url, json=body, headers=hostile)
            if rules is None and method == "PATCH":  # "rules": null means "leave the rules as they are"
                await ok(resp)
                continue
            assert 400 <= resp.status_code < 500, (method, body, resp.text)
    # A raw body the JSON decoder refuses (a lone surrogate) is a 400 as well.
    raw = b'{"scope": "tenant", "rules": [{"effect": "allow", "data_zones": ["\\udc00"]}]}'
    resp = await w.admin.post(f"{t}/policies", content=raw, headers={**hostile, "content-type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    # Another tenant's policies are out of reach.
    resp = await w.admin.post(
        f"/admin/v1/tenants/{other}/policies", json={"scope": "tenant", "rules": []}, headers=hostile
    )
    assert resp.status_code in (403, 404), resp.text
    listed = await ok(await w.admin.get(f"{t}/policies"))
    assert [p["rules"] for p in listed["data"]] == [{"egress": ALLOW_US}] * 2
    assert (await w.call(other)).status_code == 200
    assert (await w.call(acme)).status_code == 200
