"""A stored row the gateway cannot read (a hand edit, a row another version wrote) in any table of the
snapshot fails closed for its own key or tenant, and only for it, on the real path: the app in process,
an OpenAI simulator upstream, rows changed by SQL in SQLite and PostgreSQL as an operator would.

The change that breaks a row also revokes a key (of the same tenant or another) in one transaction: the
revocation must apply (one unreadable row used to fail every snapshot reload, so the gateway kept the
previous snapshot: the revoked key stayed usable, and so did the broken one)."""

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
ADMIN_KEY = "mh-bootstrap-admin-key-for-unreadable-rows"
CHAT = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_UNREADABLE_ADMIN", ADMIN_KEY)


class World:
    def __init__(self, admin: httpx.AsyncClient, url: str) -> None:
        self.admin, self.url = admin, url
        self.keys: dict[str, tuple[str, str]] = {}  # name -> (key id, secret)
        self.teams: dict[str, str] = {}

    @property
    def pg(self) -> bool:
        return self.url.startswith("postgresql")

    async def tenant(self, name: str) -> str:
        """A tenant with a team and three member keys: `<name>-a`, `<name>-b`, `<name>-c`."""
        tenant = (await ok(await self.admin.post("/admin/v1/tenants", json={"name": name}), 201))["id"]
        t = f"/admin/v1/tenants/{tenant}"
        self.teams[name] = (await ok(await self.admin.post(f"{t}/teams", json={"name": "t"}), 201))["id"]
        for k in "abc":
            made = await ok(await self.admin.post(f"{t}/keys", json={"name": k}), 201)
            self.keys[f"{name}-{k}"] = (made["id"], made["key"])
        return tenant

    async def call(self, key: str) -> httpx.Response:
        secret = self.keys[key][1]
        return await self.admin.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {secret}"})

    async def change(self, *statements: tuple[str, dict]) -> None:
        """`statements` in one transaction, as hand-edited SQL would run them, and the state version moved
        on (so every replica reloads). `:json` in a statement is the parameter `json` as a JSON value."""
        json = "CAST(:json AS JSON)" if self.pg else ":json"
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                for sql, params in statements:
                    await conn.execute(sa.text(sql.replace(":json", json)), params)
                await conn.execute(sa.text("UPDATE state_version SET version = version + 1 WHERE id = 1"))
        finally:
            await engine.dispose()

    def revoke(self, key: str) -> tuple[str, dict]:
        return "UPDATE api_keys SET revoked_at = created_at WHERE id = :id", {"id": self.keys[key][0]}


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    async with stored_app(url, "MH_TEST_UNREADABLE_ADMIN", {"authorization": f"Bearer {ADMIN_KEY}"}) as (admin, _):
        yield World(admin, url)


async def until(w: World, key: str, status: int) -> httpx.Response:
    """The key's calls answer `status` within a generous deadline (the snapshot reloads every 0.05 s)."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        resp = await w.call(key)
        if resp.status_code == status:
            return resp
        assert asyncio.get_running_loop().time() < deadline, f"{key} still answers {resp.status_code}, not {status}"
        await asyncio.sleep(0.05)


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "multihome.storage" and r.levelno >= logging.ERROR]


async def start(w: World) -> tuple[str, str]:
    acme, other = await w.tenant("acme"), await w.tenant("other")
    for key in w.keys:
        await until(w, key, 200)
    return acme, other


@pytest.mark.parametrize(
    ("column", "raw"),
    [
        pytest.param("roles", "null", id="roles-null"),
        pytest.param("roles", '"member"', id="roles-a-string"),  # tuple() made it a list of letters
        pytest.param("roles", "[5]", id="roles-not-strings"),
        pytest.param("metadata", "null", id="metadata-null"),
        pytest.param("metadata", "[]", id="metadata-a-list"),
        pytest.param("scopes_models", "5", id="scopes-a-number"),
        pytest.param("scopes_endpoints", '{"a": 1}', id="scopes-an-object"),
    ],
)
async def test_an_unreadable_key_is_refused_as_unknown_and_a_revocation_in_the_same_change_applies(
    world, column, raw, caplog
):
    w = world
    await start(w)
    broken_id = w.keys["acme-a"][0]
    await w.change(
        (f"UPDATE api_keys SET {column} = :json WHERE id = :id", {"json": raw, "id": broken_id}),
        w.revoke("acme-b"),
        w.revoke("other-b"),
    )
    for key in ("acme-b", "other-b"):
        assert error(await until(w, key, 401), 401)["code"] == "invalid_api_key"  # the revocations applied
    assert error(await w.call("acme-a"), 401)["code"] == "invalid_api_key"  # left out: unknown
    for _ in range(3):  # the tenant and its other keys are not affected
        assert (await w.call("acme-c")).status_code == 200
        assert (await w.call("other-c")).status_code == 200
        assert (await w.call("acme-a")).status_code == 401
    lines = [line for line in errors_logged(caplog) if broken_id in line]
    assert len(lines) == 1, lines  # once per reload, not per call
    assert "api_keys" in lines[0] and column in lines[0], lines
    stored_hash = await _scalar(w, "SELECT hash FROM api_keys WHERE id = :id", {"id": broken_id})
    assert not any(stored_hash in r.getMessage() or w.keys["acme-a"][1] in r.getMessage() for r in caplog.records)

    # Mended (as it was broken, by SQL): the key is served again.
    good = '["member"]' if column == "roles" else "{}" if column == "metadata" else "null"
    await w.change((f"UPDATE api_keys SET {column} = :json WHERE id = :id", {"json": good, "id": broken_id}))
    await until(w, "acme-a", 200)


async def _scalar(w: World, sql: str, params: dict):
    engine = create_async_engine(w.url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(sql), params)).scalar_one()
    finally:
        await engine.dispose()


async def refused_tenant(w: World, caplog, broken: tuple[str, dict], table: str, row_id: str) -> None:
    """Break a row of acme's by `broken` while revoking a key of each tenant; acme is refused by name,
    the other tenant is served, both revocations apply, one log line names the row."""
    await w.change(broken, w.revoke("acme-b"), w.revoke("other-b"))
    err = error(await until(w, "acme-c", 403), 403)
    assert err["code"] == "tenant_unavailable" and table in err["message"] and row_id in err["message"], err
    assert error(await until(w, "other-b", 401), 401)["code"] == "invalid_api_key"
    assert (await w.call("acme-b")).status_code in (401, 403)  # revoked, and its tenant refused
    for _ in range(3):
        assert (await w.call("other-c")).status_code == 200
        assert (await w.call("acme-a")).status_code == 403
    lines = [line for line in errors_logged(caplog) if row_id in line]
    assert len(lines) == 1 and table in lines[0], lines


@pytest.mark.parametrize("raw", ["null", "[]", '"x"', "5"])
async def test_an_unreadable_tenant_row_refuses_that_tenant_only(world, raw, caplog):
    w = world
    acme, _other = await start(w)
    broken = ("UPDATE tenants SET metadata = :json WHERE id = :id", {"json": raw, "id": acme})
    await refused_tenant(w, caplog, broken, "tenants", acme)
    await w.change(("UPDATE tenants SET metadata = :json WHERE id = :id", {"json": "{}", "id": acme}))
    await until(w, "acme-a", 200)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("amount", "lots", id="amount-not-a-number"),
        pytest.param("amount", "-5", id="amount-negative"),
        pytest.param("amount", "NaN", id="amount-nan"),
        pytest.param("currency", "", id="currency-empty"),
    ],
)
async def test_an_unreadable_budget_refuses_its_tenant_only(world, column, value, caplog):
    """A budget left out would lift a spending limit: the tenant is refused instead."""
    w = world
    acme, _other = await start(w)
    values = {"amount": "10", "currency": "USD", column: value}
    insert = (
        "INSERT INTO budgets (id, tenant_id, scope, scope_id, amount, currency, period, mode, created_at, "
        "updated_at, set_by_role) SELECT 'bud_broken', id, 'tenant', id, :amount, :currency, 'day', 'hard', "
        "created_at, created_at, 'org-admin' FROM tenants WHERE id = :tenant"
    )
    await refused_tenant(w, caplog, (insert, {**values, "tenant": acme}), "budgets", "bud_broken")
    await w.change(("DELETE FROM budgets WHERE id = 'bud_broken'", {}))
    await until(w, "acme-a", 200)


async def test_an_unreadable_token_revocation_refuses_its_tenant_only(world, caplog):
    """A revocation left out would let a revoked token in: its tenant is refused instead. (The database's
    check constraints keep every other malformed revocation out, on both databases.)"""
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks a timestamp on write")
    acme, _other = await start(w)
    insert = (
        "INSERT INTO token_revocations (id, tenant_id, kind, issuer, subject, jti, not_before, expires_at, reason, "
        "actor, created_at) SELECT 'rev_broken', id, 'subject', 'https://idp.example', 'someone', NULL, 'soon', "
        "NULL, '', 'sql', created_at FROM tenants WHERE id = :tenant"
    )
    await refused_tenant(w, caplog, (insert, {"tenant": acme}), "token_revocations", "rev_broken")


async def test_a_value_sqlite_cannot_decode_refuses_its_tenant_only(world, caplog):
    """SQLite keeps any type in any column: a date that is not a date, JSON text that is not JSON fails in
    the driver, before any row is built. PostgreSQL refuses to store such values."""
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks a column's type on write")
    acme, _other = await start(w)
    team = w.teams["acme"]
    await refused_tenant(
        w, caplog, ("UPDATE teams SET created_at = 'soon' WHERE id = :id", {"id": team}), "teams", team
    )


async def test_a_policy_sqlite_cannot_decode_refuses_its_tenant(world, caplog):
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks JSON on write")
    acme, _other = await start(w)
    made = await ok(
        await w.admin.post(f"/admin/v1/tenants/{acme}/policies", json={"scope": "tenant", "rules": []}), 201
    )
    broken = ("UPDATE policies SET rules = '{not json' WHERE id = :id", {"id": made["id"]})
    await refused_tenant(w, caplog, broken, "policies", made["id"])


async def test_an_entitlement_sqlite_cannot_decode_refuses_its_tenant(world, caplog):
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks a date on write")
    acme, _other = await start(w)
    grant = {"model_group": "g", "starts_on": "2026-01-01", "ends_on": "2099-01-01"}
    made = await ok(await w.admin.post(f"/admin/v1/tenants/{acme}/entitlements", json=grant), 201)
    broken = ("UPDATE entitlements SET ends_on = 'never' WHERE id = :id", {"id": made["id"]})
    await refused_tenant(w, caplog, broken, "entitlements", made["id"])


async def test_an_unreadable_exclusive_grant_still_keeps_other_tenants_off_its_group(world, caplog):
    """Left out, an exclusive grant would open its group to every other tenant: while it cannot be read
    the group is refused to them (and its own tenant is refused, as for any unreadable row)."""
    w = world
    if w.pg:
        pytest.skip("PostgreSQL checks a date on write")
    acme, _other = await start(w)
    grant = {"model_group": "g", "starts_on": "2026-01-01", "ends_on": "2099-01-01", "exclusive": True}
    made = await ok(await w.admin.post(f"/admin/v1/tenants/{acme}/entitlements", json=grant), 201)
    assert error(await until(w, "other-c", 403), 403)["code"] == "exclusive_to_other_tenant"
    await w.change(
        ("UPDATE entitlements SET ends_on = 'never' WHERE id = :id", {"id": made["id"]}), w.revoke("other-b")
    )
    assert error(await until(w, "acme-a", 403), 403)["code"] == "tenant_unavailable"
    assert error(await until(w, "other-b", 401), 401)["code"] == "invalid_api_key"  # the revocation applied
    deadline = asyncio.get_running_loop().time() + 15
    while (resp := await w.call("other-c")).status_code == 403 and resp.json()["error"]["code"] == (
        "exclusive_to_other_tenant"
    ):  # the policy engine is rebuilt from the new snapshot in the background
        assert asyncio.get_running_loop().time() < deadline, "the policy engine was never rebuilt"
        await asyncio.sleep(0.05)
    for _ in range(3):
        err = error(await w.call("other-c"), 403)
        assert err["code"] == "policy_unavailable" and "'g'" in err["message"], err
        assert made["id"] not in err["message"] and acme not in err["message"]  # another tenant's row: not named
    await w.change(("UPDATE entitlements SET ends_on = '2099-01-01' WHERE id = :id", {"id": made["id"]}))
    await until(w, "acme-a", 200)
    while error(await w.call("other-c"), 403)["code"] != "exclusive_to_other_tenant":  # mended: as before
        assert asyncio.get_running_loop().time() < deadline + 15, "the mended grant never applied"
        await asyncio.sleep(0.05)
