"""The admin API on a stored row the gateway cannot read (a hand edit, a row another version wrote): never
a 500. A list answers its readable rows and reports the others under `unreadable` (by id, with what is
wrong, never a stored value); a get answers 409 `unreadable_row`; a revoke, delete or replace of the row
works (that is how it is mended). The refused tenant's own admins keep the calls that mend it, its model
calls stay refused, and an org-admin of that tenant keeps the whole admin API (docs/storage.md).

The app runs in process on SQLite and PostgreSQL; rows are broken by SQL, as an operator's edit would."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from admin_http import error, ok
from stored_app import STORES, store_url, stored_app

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-admin-unreadable-rows"
CHAT = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
T = "/admin/v1/tenants"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_ADMIN_UNREADABLE", ADMIN_KEY)


class World:
    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.secrets: list[str] = []  # every key secret issued: none may ever appear in an answer or a log

    @property
    def pg(self) -> bool:
        return self.url.startswith("postgresql")

    async def admin(self, method: str, path: str, key: str = ADMIN_KEY, **kw) -> httpx.Response:
        resp = await self.client.request(method, path, headers={"authorization": f"Bearer {key}"}, **kw)
        assert resp.status_code < 500, resp.text
        assert not any(s in resp.text for s in self.secrets), "a key secret in an answer"
        return resp

    async def key(self, tenant: str, name: str, roles: list[str] | None = None) -> tuple[str, str]:
        body = {"name": name, **({"roles": roles} if roles else {})}
        made = await ok(await self.admin("POST", f"{T}/{tenant}/keys", json=body), 201)
        self.secrets.append(made["key"])
        return made["id"], made["key"]

    async def chat(self, secret: str) -> httpx.Response:
        return await self.client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {secret}"})

    async def sql(self, statement: str, params: dict | None = None) -> None:
        """One statement as hand-edited SQL would run it, with the state version moved on (replicas reload).
        `:json` is the parameter `json` as a JSON value."""
        json = "CAST(:json AS JSON)" if self.pg else ":json"
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text(statement.replace(":json", json)), params or {})
                await conn.execute(sa.text("UPDATE state_version SET version = version + 1 WHERE id = 1"))
        finally:
            await engine.dispose()

    async def scalar(self, statement: str, params: dict):
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(sa.text(statement), params)).scalar_one()
        finally:
            await engine.dispose()


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    async with stored_app(url, "MH_TEST_ADMIN_UNREADABLE") as (client, _):
        yield World(client, url)


async def until(w: World, secret: str, status: int) -> httpx.Response:
    """The key's model calls answer `status` within a generous deadline (the snapshot reloads every 0.05 s)."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        resp = await w.chat(secret)
        if resp.status_code == status:
            return resp
        assert asyncio.get_running_loop().time() < deadline, f"still {resp.status_code}, not {status}: {resp.text}"
        await asyncio.sleep(0.05)


def reported(listing: dict, row_id: str) -> dict:
    """The `unreadable` entry of a list answer for `row_id`, checked for its shape."""
    found = [u for u in listing.get("unreadable", []) if u["id"] == row_id]
    assert len(found) == 1, listing
    assert set(found[0]) >= {"object", "table", "id", "tenant_id", "problem"}
    assert found[0]["object"] == "unreadable_row"
    assert row_id not in {item.get("id") for item in listing["data"]}, listing
    return found[0]


def unreadable_error(resp: httpx.Response, row_id: str, field: str) -> dict:
    err = error(resp, 409)
    assert err["code"] == "unreadable_row" and row_id in err["message"] and field in err["message"], err
    assert resp.headers["x-should-retry"] == "false"  # a client's SDK would otherwise send it twice more
    return err


async def tenant(w: World, name: str) -> str:
    return (await ok(await w.admin("POST", T, json={"name": name}), 201))["id"]


@pytest.mark.parametrize(
    ("column", "raw"),
    [
        pytest.param("roles", "null", id="roles-null"),
        pytest.param("roles", '"member"', id="roles-a-string"),
        pytest.param("metadata", "[]", id="metadata-a-list"),
    ],
)
async def test_a_key_that_cannot_be_read_is_listed_apart_refused_by_get_and_revoked(world, column, raw, caplog):
    w = world
    caplog.set_level(logging.INFO)
    acme = await tenant(w, "acme")
    broken, broken_secret = await w.key(acme, "broken")
    good, _ = await w.key(acme, "good")
    await w.sql(f"UPDATE api_keys SET {column} = :json WHERE id = :id", {"json": raw, "id": broken})
    stored_hash = await w.scalar("SELECT hash FROM api_keys WHERE id = :id", {"id": broken})

    listing = await ok(await w.admin("GET", f"{T}/{acme}/keys"))
    assert [k["id"] for k in listing["data"]] == [good]
    bad = reported(listing, broken)
    assert bad["table"] == "api_keys" and bad["tenant_id"] == acme and column in bad["problem"], bad
    unreadable_error(await w.admin("GET", f"{T}/{acme}/keys/{broken}"), broken, column)

    revoked = await ok(await w.admin("DELETE", f"{T}/{acme}/keys/{broken}"))
    assert revoked["id"] == broken and revoked["revoked"] is True and column in revoked["problem"], revoked
    assert await w.scalar("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = :id", {"id": broken})
    again = await ok(await w.admin("DELETE", f"{T}/{acme}/keys/{broken}"))  # idempotent, as for any key
    assert again["revoked"] is True
    events = (await ok(await w.admin("GET", f"{T}/{acme}/events")))["data"]
    assert [e["object_id"] for e in events if e["action"] == "key.revoke"] == [broken]
    assert error(await until(w, broken_secret, 401), 401)["code"] == "invalid_api_key"

    for text in [r.getMessage() for r in caplog.records] + [listing.__repr__(), revoked.__repr__()]:
        assert stored_hash not in text and broken_secret not in text


async def test_a_tenant_admin_revokes_an_unreadable_key_only_if_its_roles_are_ones_it_could_grant(world):
    """Its roles read on their own: an auditor key whose metadata cannot be read stays an org-admin's to revoke,
    and so does a key whose roles cannot be read at all; a member key's the tenant-admin mends."""
    w = world
    acme = await tenant(w, "acme")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    auditor, _ = await w.key(acme, "auditor", ["auditor"])
    unknown, _ = await w.key(acme, "unknown", ["org-admin"])
    member, _ = await w.key(acme, "member")
    for key_id, column, raw in (
        (auditor, "metadata", "[]"),
        (unknown, "roles", '"org-admin"'),
        (member, "metadata", "[]"),
    ):
        await w.sql(f"UPDATE api_keys SET {column} = :json WHERE id = :id", {"json": raw, "id": key_id})

    # The console offers the tenant-admin the Revoke of the member's key only.
    assert (await w.client.post("/console/login", data={"key": admin})).status_code == 303
    page = (await w.client.get(f"/console/tenants/{acme}")).text
    revoke = f'action="/console/tenants/{acme}/keys/{{}}/revoke"'
    assert all(f'data-unreadable="{k}"' in page for k in (auditor, unknown, member))
    assert revoke.format(member) in page and not [k for k in (auditor, unknown) if revoke.format(k) in page]

    for key_id, said in ((auditor, "Only an org-admin can revoke auditor keys"), (unknown, "roles cannot be read")):
        err = error(await w.admin("DELETE", f"{T}/{acme}/keys/{key_id}", admin), 403)
        assert err["code"] == "insufficient_role" and said in err["message"], err
        assert not await w.scalar("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = :id", {"id": key_id})
    assert (await ok(await w.admin("DELETE", f"{T}/{acme}/keys/{member}", admin)))["revoked"] is True
    assert (await ok(await w.admin("DELETE", f"{T}/{acme}/keys/{auditor}")))["revoked"] is True  # the org-admin


async def test_a_tenant_that_cannot_be_read_is_mended_by_an_org_admin_replacing_its_metadata(world):
    w = world
    acme = await tenant(w, "acme")
    _, member = await w.key(acme, "member")
    await w.sql("UPDATE tenants SET metadata = :json WHERE id = :id", {"json": "null", "id": acme})
    assert error(await until(w, member, 403), 403)["code"] == "tenant_unavailable"
    assert "PATCH" in unreadable_error(await w.admin("GET", f"{T}/{acme}"), acme, "metadata")["message"]

    mended = await ok(await w.admin("PATCH", f"{T}/{acme}", json={"metadata": {"owner": "platform"}}))
    assert (mended["id"], mended["name"], mended["metadata"]) == (acme, "acme", {"owner": "platform"}), mended
    assert "unreadable" not in await ok(await w.admin("GET", T))
    await ok(await until(w, member, 200))  # the tenant's calls are served again
    events = (await ok(await w.admin("GET", f"{T}/{acme}/events")))["data"]
    assert [e["detail"] for e in events if e["action"] == "tenant.update"] == [{"changed": ["metadata"]}]


async def test_a_tenant_is_renamed_by_an_org_admin_only_and_never_onto_another_name(world):
    w = world
    acme, other = await tenant(w, "acme"), await tenant(w, "other")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    renamed = await ok(await w.admin("PATCH", f"{T}/{acme}", json={"name": "acme-eu"}))
    assert (renamed["name"], renamed["metadata"]) == ("acme-eu", {}), renamed
    assert error(await w.admin("PATCH", f"{T}/{acme}", json={"name": "other"}), 409)["code"] is not None
    assert error(await w.admin("PATCH", f"{T}/{acme}", json={}), 400)
    assert error(await w.admin("PATCH", f"{T}/{acme}", json={"metadata": []}), 400)
    assert error(await w.admin("PATCH", f"{T}/{acme}", admin, json={"name": "mine"}), 403)
    assert error(await w.admin("PATCH", f"{T}/{other}", admin, json={"metadata": {"owner": "acme"}}), 403)
    assert error(await w.admin("PATCH", f"{T}/ten_nope", json={"name": "x"}), 404)
    assert (await ok(await w.admin("GET", f"{T}/{other}")))["name"] == "other"


@pytest.mark.parametrize("raw", ["null", '"x"'])
async def test_a_tenant_that_cannot_be_read_is_listed_apart_refused_by_get_and_can_be_deleted(world, raw):
    w = world
    acme, other = await tenant(w, "acme"), await tenant(w, "other")
    await w.sql("UPDATE tenants SET metadata = :json WHERE id = :id", {"json": raw, "id": acme})

    listing = await ok(await w.admin("GET", T))
    assert [t["id"] for t in listing["data"]] == [other]
    assert reported(listing, acme)["table"] == "tenants"
    unreadable_error(await w.admin("GET", f"{T}/{acme}"), acme, "metadata")
    gone = await ok(await w.admin("DELETE", f"{T}/{acme}"))
    assert gone == {"id": acme, "object": "tenant.deleted", "deleted": True}
    assert "unreadable" not in await ok(await w.admin("GET", T))


async def test_a_budget_that_cannot_be_read_is_mended_by_its_tenant_admin_while_its_calls_stay_refused(world, caplog):
    """The tenant is refused (its budget may be a limit); its tenant-admin is not locked out of the admin
    API: it reads what is wrong and mends it, while its model calls and the admin calls that mend nothing
    stay refused."""
    w = world
    acme = await tenant(w, "acme")
    _, member = await w.key(acme, "member")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    _, auditor = await w.key(acme, "auditor", ["auditor"])
    await until(w, member, 200)
    insert = (
        "INSERT INTO budgets (id, tenant_id, scope, scope_id, amount, currency, period, mode, created_at, "
        "updated_at, set_by_role) SELECT :id, id, 'tenant', id, :amount, 'USD', :period, 'hard', created_at, "
        "created_at, :role FROM tenants WHERE id = :tenant"
    )
    await w.sql(insert, {"id": "bud_lots", "amount": "lots", "period": "day", "role": "tenant-admin", "tenant": acme})
    await w.sql(insert, {"id": "bud_org", "amount": "-5", "period": "month", "role": "org-admin", "tenant": acme})
    assert error(await until(w, member, 403), 403)["code"] == "tenant_unavailable"

    for key in (admin, auditor):
        listing = await ok(await w.admin("GET", f"{T}/{acme}/budgets", key))
        assert "amount" in reported(listing, "bud_lots")["problem"] and reported(listing, "bud_org")
        unreadable_error(await w.admin("GET", f"{T}/{acme}/budgets/bud_lots", key), "bud_lots", "amount")
        assert (await ok(await w.admin("GET", f"{T}/{acme}", key)))["id"] == acme
        assert error(await w.admin("GET", f"{T}/{acme}/usage", key), 403)["code"] == "tenant_unavailable"
    assert error(await w.admin("GET", f"{T}/{acme}/state", admin), 403)["code"] == "tenant_unavailable"

    # An org-admin's budget that cannot be read: a tenant-admin cannot tell whether a change lifts it.
    err = error(await w.admin("DELETE", f"{T}/{acme}/budgets/bud_org", admin), 403)
    assert err["code"] == "budget_set_by_org_admin" and "bud_org" in err["message"], err
    mended = await ok(await w.admin("PATCH", f"{T}/{acme}/budgets/bud_org", json={"amount": "5"}))  # org-admin
    assert mended["amount"] == "5" and mended["id"] == "bud_org"
    gone = await ok(await w.admin("DELETE", f"{T}/{acme}/budgets/bud_lots", admin))
    assert gone == {"id": "bud_lots", "object": "budget.deleted", "deleted": True}
    assert (await until(w, member, 200)).status_code == 200
    assert "unreadable" not in await ok(await w.admin("GET", f"{T}/{acme}/budgets", admin))
    await ok(await w.admin("GET", f"{T}/{acme}/usage", admin))  # no longer refused
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "multihome.admin"]


async def test_an_org_admin_of_a_refused_tenant_keeps_the_admin_api_and_a_member_gets_nothing(world):
    w = world
    acme, other = await tenant(w, "acme"), await tenant(w, "other")
    _, org = await w.key(acme, "org", ["org-admin"])
    _, member = await w.key(acme, "member")
    await w.sql("UPDATE tenants SET metadata = :json WHERE id = :id", {"json": "null", "id": acme})
    assert error(await until(w, org, 403), 403)["code"] == "tenant_unavailable"  # its model calls: refused
    assert (await ok(await w.admin("GET", f"{T}/{other}/teams", org)))["data"] == []
    await ok(await w.admin("GET", f"{T}/{acme}/usage", org))
    reported(await ok(await w.admin("GET", T, org)), acme)
    err = error(await w.admin("GET", f"{T}/{acme}/keys", member), 403)  # a member: no admin role, as ever
    assert err["code"] == "insufficient_role", err


async def test_a_key_of_another_tenant_cannot_be_read_or_revoked_through_a_refused_tenant(world):
    """The refusal lets a tenant's admins in to mend their own rows, not anyone else's."""
    w = world
    acme, other = await tenant(w, "acme"), await tenant(w, "other")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    theirs, _ = await w.key(other, "theirs")
    await w.sql("UPDATE tenants SET metadata = :json WHERE id = :id", {"json": "null", "id": acme})
    await w.sql("UPDATE api_keys SET roles = :json WHERE id = :id", {"json": "null", "id": theirs})
    assert error(await until(w, admin, 403), 403)["code"] == "tenant_unavailable"
    assert (await ok(await w.admin("GET", f"{T}/{acme}/keys", admin)))["data"]  # its own: open to mend
    for method in ("GET", "DELETE"):
        err = error(await w.admin(method, f"{T}/{other}/keys/{theirs}", admin), 403)
        assert err["code"] == "other_tenant", err
    assert error(await w.admin("GET", f"{T}/{other}/keys", admin), 403)["code"] == "other_tenant"


async def test_a_policy_whose_rules_cannot_be_decoded_is_listed_apart_and_replaced(world):
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks JSON on write")
    acme = await tenant(w, "acme")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    _, member = await w.key(acme, "member")
    # The tenant-admin's own: it mends those (an org-admin's it may not change, docs/policy.md).
    made = await ok(await w.admin("POST", f"{T}/{acme}/policies", admin, json={"scope": "tenant", "rules": []}), 201)
    kept = await ok(await w.admin("POST", f"{T}/{acme}/policies", admin, json={"scope": "tenant", "rules": []}), 201)
    org = await ok(await w.admin("POST", f"{T}/{acme}/policies", json={"scope": "tenant", "rules": []}), 201)
    await w.sql("UPDATE policies SET rules = '{not json' WHERE id = :id", {"id": made["id"]})
    assert error(await until(w, member, 403), 403)["code"] == "tenant_unavailable"

    listing = await ok(await w.admin("GET", f"{T}/{acme}/policies", admin))
    assert [p["id"] for p in listing["data"]] == [kept["id"], org["id"]]
    assert reported(listing, made["id"])["table"] == "policies"
    unreadable_error(await w.admin("GET", f"{T}/{acme}/policies/{made['id']}", admin), made["id"], "decoded")
    rules = [{"effect": "allow", "regions": ["us-east-1"]}]
    replaced = await ok(await w.admin("PATCH", f"{T}/{acme}/policies/{made['id']}", admin, json={"rules": rules}))
    assert replaced["id"] == made["id"] and replaced["rules"]["egress"][0]["regions"] == ["us-east-1"]
    await until(w, member, 200)
    await w.sql("UPDATE policies SET rules = '{not json' WHERE id = :id", {"id": kept["id"]})
    await until(w, member, 403)
    await ok(await w.admin("DELETE", f"{T}/{acme}/policies/{kept['id']}", admin))
    await until(w, member, 200)
    # An org-admin's unreadable policy: judged by who set it, read alone; the org-admin mends it.
    await w.sql("UPDATE policies SET rules = '{not json' WHERE id = :id", {"id": org["id"]})
    await until(w, member, 403)
    for method, body in (("PATCH", {"rules": rules}), ("DELETE", None)):
        err = error(await w.admin(method, f"{T}/{acme}/policies/{org['id']}", admin, json=body), 403)
        assert err["code"] == "policy_set_by_org_admin", err
    await ok(await w.admin("DELETE", f"{T}/{acme}/policies/{org['id']}"))
    await until(w, member, 200)


async def test_a_grant_a_pin_a_team_and_a_revocation_sqlite_cannot_decode_are_listed_apart_and_removed(world):
    """SQLite keeps any type in any column: these fail in the driver, before any row is built."""
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks a column's type on write")
    acme = await tenant(w, "acme")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    _, member = await w.key(acme, "member")
    grant = {"model_group": "g", "starts_on": "2026-01-01", "ends_on": "2099-01-01"}
    ent = (await ok(await w.admin("POST", f"{T}/{acme}/entitlements", json=grant), 201))["id"]
    team = (await ok(await w.admin("POST", f"{T}/{acme}/teams", json={"name": "t"}), 201))["id"]
    await w.sql(
        # A tenant-admin's (set_by_role): it lifts only those (docs/oidc.md "Who may revoke").
        "INSERT INTO token_revocations (id, tenant_id, kind, issuer, subject, jti, not_before, expires_at, reason, "
        "actor, created_at, set_by_role) SELECT 'rev_broken', id, 'subject', 'https://idp.example', 'someone', NULL, "
        "'soon', NULL, '', 'sql', created_at, 'tenant-admin' FROM tenants WHERE id = :tenant",
        {"tenant": acme},
    )
    await w.sql(
        "INSERT INTO stateful_pins (id, tenant_id, providers, data_zones, work, valid_from, valid_until, note, "
        "created_at, revoked_at) SELECT 'pin_broken', id, '{not json', NULL, '[]', created_at, NULL, '', "
        "created_at, NULL FROM tenants WHERE id = :tenant",
        {"tenant": acme},
    )
    await w.sql("UPDATE entitlements SET ends_on = 'never' WHERE id = :id", {"id": ent})
    await w.sql("UPDATE teams SET created_at = 'soon' WHERE id = :id", {"id": team})
    assert error(await until(w, member, 403), 403)["code"] == "tenant_unavailable"

    rows = {
        "entitlements": (ent, f"{T}/{acme}/entitlements", ADMIN_KEY),  # grants and pins: an org-admin's
        "stateful_pins": ("pin_broken", f"{T}/{acme}/stateful-pins", ADMIN_KEY),
        "teams": (team, f"{T}/{acme}/teams", admin),
        "token_revocations": ("rev_broken", "/admin/v1/token-revocations", admin),
    }
    for table, (row_id, path, mender) in rows.items():
        assert reported(await ok(await w.admin("GET", path, admin)), row_id)["table"] == table
        unreadable_error(await w.admin("GET", f"{path}/{row_id}", admin), row_id, "decoded")
        done = await ok(await w.admin("DELETE", f"{path}/{row_id}", mender))
        assert done["id"] == row_id and (done.get("revoked") or done.get("deleted")), done
    await until(w, member, 200)


async def test_a_refused_tenants_admin_signs_in_to_the_console_and_sees_its_tenant(world):
    """The console identifies as the admin API does: the refused tenant's admin signs in and reads its
    tenant's page (every call behind it reads the tenant's stored rows), which names the row that cannot be
    read; the usage overview stays refused."""
    w = world
    acme = await tenant(w, "acme")
    _, member = await w.key(acme, "member")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    insert = (
        "INSERT INTO budgets (id, tenant_id, scope, scope_id, amount, currency, period, mode, created_at, "
        "updated_at, set_by_role) SELECT 'bud_lots', id, 'tenant', id, 'lots', 'USD', 'day', 'hard', created_at, "
        "created_at, 'tenant-admin' FROM tenants WHERE id = :tenant"
    )
    await w.sql(insert, {"tenant": acme})
    assert error(await until(w, member, 403), 403)["code"] == "tenant_unavailable"
    login = await w.client.post("/console/login", data={"key": admin})
    assert login.status_code == 303, login.text
    page = await w.client.get(f"/console/tenants/{acme}")
    assert page.status_code == 200 and acme in page.text, page.text[:500]
    assert 'data-unreadable="bud_lots"' in page.text and "amount is not a decimal number" in page.text
    assert not any(s in page.text for s in w.secrets)
    overview = await w.client.get("/console/overview")
    assert overview.status_code == 403 and "cannot be read" in overview.text, overview.text[:300]


async def test_a_grant_that_cannot_be_read_keeps_another_tenants_grant_of_its_group_out(world):
    """Granting checks other tenants' grants for an exclusive one in the way: one that cannot be read may be
    exclusive, so an overlapping grant is refused (409, naming it) until an org admin revokes it."""
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks a date on write")
    acme, other = await tenant(w, "acme"), await tenant(w, "other")
    grant = {"model_group": "g", "starts_on": "2026-01-01", "ends_on": "2099-01-01", "exclusive": True}
    ent = (await ok(await w.admin("POST", f"{T}/{acme}/entitlements", json=grant), 201))["id"]
    await w.sql("UPDATE entitlements SET ends_on = 'never' WHERE id = :id", {"id": ent})
    for exclusive in (False, True):
        err = error(await w.admin("POST", f"{T}/{other}/entitlements", json={**grant, "exclusive": exclusive}), 409)
        assert err["code"] == "conflict" and ent in err["message"] and "cannot be read" in err["message"], err
    # One of a group no grant of `g` can name (the config's only group: a grant names one of its groups) is not.
    await w.sql("UPDATE entitlements SET model_group = 'h' WHERE id = :id", {"id": ent})
    await ok(await w.admin("POST", f"{T}/{other}/entitlements", json={**grant, "exclusive": False}), 201)
    await ok(await w.admin("DELETE", f"{T}/{acme}/entitlements/{ent}"))
    await ok(await w.admin("POST", f"{T}/{other}/entitlements", json=grant), 201)


@pytest.mark.parametrize("raw", ["null", '"x"', "[1]"])
async def test_an_admin_event_that_cannot_be_read_is_listed_apart(world, raw):
    # An admin event's detail edited by hand: the events lists (a tenant's and the organisation's) serve the
    # other events and report this one, where they answered 500.
    w = world
    acme = await tenant(w, "acme")
    await w.key(acme, "one")
    await w.key(acme, "two")
    events = (await ok(await w.admin("GET", f"{T}/{acme}/events")))["data"]
    broken = events[0]["id"]
    await w.sql("UPDATE admin_events SET detail = :json WHERE id = :id", {"json": raw, "id": broken})
    for path in (f"{T}/{acme}/events", "/admin/v1/events"):
        listing = await ok(await w.admin("GET", path))
        assert [e["id"] for e in events[1:]] == [
            e["id"] for e in listing["data"] if e["id"] in {x["id"] for x in events}
        ]
        bad = reported(listing, broken)
        assert bad["table"] == "admin_events" and bad["tenant_id"] == acme and "detail" in bad["problem"], bad


async def test_a_tenant_admins_unreadable_budget_on_an_auditors_key_is_still_an_org_admins_to_change(world):
    """A budget on a key holding a role only an org-admin grants is the org-admin's to change, whoever set it:
    so also when its row cannot be read (its key read apart), and its tenant-admin's mends are refused."""
    w = world
    acme = await tenant(w, "acme")
    _, admin = await w.key(acme, "admin", ["tenant-admin"])
    auditor, _ = await w.key(acme, "auditor", ["auditor"])
    await w.sql(
        "INSERT INTO budgets (id, tenant_id, scope, scope_id, amount, currency, period, mode, created_at, "
        "updated_at, set_by_role) SELECT 'bud_aud', id, 'key', :key, 'lots', 'USD', 'day', 'hard', created_at, "
        "created_at, 'tenant-admin' FROM tenants WHERE id = :tenant",
        {"key": auditor, "tenant": acme},
    )
    for method, body in (("DELETE", None), ("PATCH", {"amount": "5"})):
        err = error(await w.admin(method, f"{T}/{acme}/budgets/bud_aud", admin, json=body), 403)
        assert err["code"] == "budget_set_by_org_admin" and auditor in err["message"], err
    gone = await ok(await w.admin("DELETE", f"{T}/{acme}/budgets/bud_aud"))  # an org-admin's to delete
    assert gone["deleted"] is True
