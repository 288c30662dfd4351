"""A budget on a key that holds a role only an org-admin grants (auditor, org-admin) is the org-admin's,
whoever set it: a tenant-admin may not set one (403 `insufficient_role`), nor change or delete one a
tenant-admin set before that rule (403 `budget_set_by_org_admin`): lowering it to nothing, hard, would
cut an auditor's or an org-admin's key off. The real app in process, SQLite then PostgreSQL; the budget
from before the rule is written to the store as a tenant-admin's, as that rule's absence let it be."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from admin_http import error, ok, running
from builders import audit, database, identity, single
from multihome.storage import open_store
from multihome.storage.budgets import BudgetsRepo
from multihome.storage.key_roles import PrivilegedKey
from multihome.storage.policies import PoliciesRepo
from multihome.storage.tables import api_keys, budgets

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-budget-keys"
T = "/admin/v1/tenants"


async def _call(app, key: str, method: str, path: str, **kw) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        return await c.request(method, path, headers={"authorization": f"Bearer {key}"}, **kw)


@pytest.mark.parametrize("role", ["auditor", "org-admin"])
async def test_a_tenant_admin_cannot_change_or_delete_a_budget_on_a_privileged_key(db_url, monkeypatch, tmp_path, role):
    monkeypatch.setenv("MH_TEST_BUDGET_KEYS_ADMIN", ADMIN_KEY)
    cfg = single(storage=database(db_url), identity=identity("MH_TEST_BUDGET_KEYS_ADMIN"), audit=audit(tmp_path / "a"))
    async with running(cfg) as app:
        tenant = (await ok(await _call(app, ADMIN_KEY, "POST", T, json={"name": "acme"}), 201))["id"]
        keys = f"{T}/{tenant}/keys"

        async def key(roles: list[str]) -> dict:
            return await ok(await _call(app, ADMIN_KEY, "POST", keys, json={"name": "k", "roles": roles}), 201)

        admin = (await key(["tenant-admin"]))["key"]
        privileged = (await key([role]))["id"]
        member = (await key(["member"]))["id"]
        url = f"{T}/{tenant}/budgets"
        body = {"scope": "key", "scope_id": privileged, "amount": "100", "period": "day"}
        refused = error(await _call(app, admin, "POST", url, json=body), 403)
        assert (refused["code"], refused["param"]) == ("insufficient_role", "scope_id")
        assert f"Only an org-admin can set a budget or policy on {role} keys" in refused["message"]

        # Before the rule, a tenant-admin could: such a budget is in the store as a tenant-admin's (the store
        # refuses to write one now, so it is written as an org-admin's and handed to the tenant-admin by SQL).
        store = await open_store(db_url)
        try:
            old, spare = [
                await store.create_budget(
                    tenant, scope="key", scope_id=privileged, amount="100", period=p, actor="t", role="org-admin"
                )
                for p in ("day", "month")
            ]
            async with store.engine.begin() as conn:
                await conn.execute(sa.update(budgets).values(set_by_role="tenant-admin"))
        finally:
            await store.close()

        for method, change in (("PATCH", {"amount": "0.000000001"}), ("PATCH", {"mode": "hard"}), ("DELETE", None)):
            err = error(await _call(app, admin, method, f"{url}/{old.id}", json=change), 403)
            assert (err["code"], err["type"]) == ("budget_set_by_org_admin", "permission_error"), err
            assert privileged in err["message"] and role in err["message"]
        kept = await ok(await _call(app, ADMIN_KEY, "GET", f"{url}/{old.id}"))
        assert (kept["amount"], kept["mode"]) == ("100", "hard")

        # An org-admin still may; a tenant-admin's budget on an ordinary key is still the tenant-admin's.
        lowered = await ok(await _call(app, ADMIN_KEY, "PATCH", f"{url}/{old.id}", json={"amount": "50"}))
        assert lowered["set_by_role"] == "org-admin"
        await ok(await _call(app, ADMIN_KEY, "DELETE", f"{url}/{spare.id}"))
        own = {"scope": "key", "scope_id": member, "amount": "5", "period": "day"}
        mine = await ok(await _call(app, admin, "POST", url, json=own), 201)
        await ok(await _call(app, admin, "PATCH", f"{url}/{mine['id']}", json={"amount": "9"}))
        await ok(await _call(app, admin, "DELETE", f"{url}/{mine['id']}"))


async def _set_roles(db_url: str, key_id: str, roles: list[str]) -> None:
    store = await open_store(db_url)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id).values(roles=roles))
    finally:
        await store.close()


async def test_the_store_refuses_a_tenant_admins_budget_or_policy_on_a_privileged_key_in_its_write(
    db_url, monkeypatch, tmp_path
):
    """The check runs in the write's transaction (the key's row locked on PostgreSQL), not before it: a key whose
    roles are not what the handler would have read before the write (here, made an auditor's between the two)
    is judged by what the write sees. Before, the handler checked first and the store wrote whatever came. A
    policy scoped to a key is under the same rule (docs/policy.md), checked the same way."""
    monkeypatch.setenv("MH_TEST_BUDGET_KEYS_ADMIN", ADMIN_KEY)
    cfg = single(storage=database(db_url), identity=identity("MH_TEST_BUDGET_KEYS_ADMIN"), audit=audit(tmp_path / "a"))
    async with running(cfg) as app:
        tenant = (await ok(await _call(app, ADMIN_KEY, "POST", T, json={"name": "acme"}), 201))["id"]
        keys = f"{T}/{tenant}/keys"
        admin = await ok(await _call(app, ADMIN_KEY, "POST", keys, json={"name": "a", "roles": ["tenant-admin"]}), 201)
        member = await ok(await _call(app, ADMIN_KEY, "POST", keys, json={"name": "m", "roles": ["member"]}), 201)
        for repo, method, kind, body in (
            (BudgetsRepo, "create_budget", "budgets", {"amount": "1", "period": "day"}),
            (PoliciesRepo, "create_policy", "policies", {"rules": [{"effect": "deny"}]}),  # the same rule
        ):
            create = getattr(repo, method)

            async def roles_change_first(self, tenant_id, create=create, **kw):
                async with self.engine.begin() as conn:  # what a concurrent writer commits before this write
                    await conn.execute(
                        sa.update(api_keys).where(api_keys.c.id == member["id"]).values(roles=["auditor"])
                    )
                return await create(self, tenant_id, **kw)

            url = f"{T}/{tenant}/{kind}"
            with monkeypatch.context() as patched:
                patched.setattr(repo, method, roles_change_first)
                body = {"scope": "key", "scope_id": member["id"], **body}
                refused = error(await _call(app, admin["key"], "POST", url, json=body), 403)
            assert (refused["code"], refused["param"]) == ("insufficient_role", "scope_id"), (kind, refused)
            assert "auditor keys" in refused["message"]
            await _set_roles(db_url, member["id"], ["member"])  # as it was, for the next kind
            listed = await ok(await _call(app, ADMIN_KEY, "GET", url))
            assert [b for b in listed["data"] if b["scope"] == "key"] == [], kind  # nothing was written

    await _set_roles(db_url, member["id"], ["auditor"])
    store = await open_store(db_url)
    try:
        with pytest.raises(PrivilegedKey) as info:
            await store.create_budget(
                tenant, scope="key", scope_id=member["id"], amount="1", actor="t", role="tenant-admin"
            )
        assert info.value.roles == ("auditor",)
        # The roles cannot be read: it may hold one, so a tenant-admin may not either; an org-admin may.
        await _set_roles(db_url, member["id"], ["wizard"])
        with pytest.raises(PrivilegedKey) as info:
            await store.create_budget(
                tenant, scope="key", scope_id=member["id"], amount="1", actor="t", role="tenant-admin"
            )
        assert info.value.roles == ()
        made = await store.create_budget(
            tenant, scope="key", scope_id=member["id"], amount="1", actor="o", role="org-admin"
        )
        assert made.set_by_role == "org-admin"
    finally:
        await store.close()
