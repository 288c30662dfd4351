"""Admin resource: the caller (`whoami`), tenants and their teams."""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from ...schema.errors import ApiError
from ...schema.principal import ORG_ADMIN, TENANT_ADMIN, Principal
from ...storage.budgets import Outranked
from ...storage.policies import PolicyOutranked
from . import bodies as B
from .pages import QUERY, SAYS, asked, paged
from .rbac import ANY, ORG, READ, WRITE, anyone, authorize
from .route import PREFIX, STORAGE, AdminCall, Route, Services, deleted, listing

T = f"{PREFIX}/tenants"


async def whoami(s: Services, c: AdminCall) -> Any:
    # The tenant of the config's keys has no stored row: the one place a client (the CLI) can learn its id.
    return {"object": "principal", **msgspec.to_builtins(c.who), "static_keys_tenant": s.static_keys_tenant}


async def list_tenants(s: Services, c: AdminCall) -> Any:
    tenants = await s.store.list_tenants()
    bad = tenants.unreadable
    if ORG_ADMIN not in c.who.roles:
        tenants = [t for t in tenants if t.id == c.who.tenant]
        bad = tuple(u for u in bad if u.id == c.who.tenant)
    return listing(tenants, bad)


def _readers(principal: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    """An org-admin, or a role that reads its own tenant: a member (an ordinary key) has only `whoami`."""
    if ORG_ADMIN not in principal.roles:
        authorize(principal, READ, principal.tenant)


async def create_tenant(s: Services, c: AdminCall) -> Any:
    return await s.store.create_tenant(c.body.name, metadata=c.body.metadata, actor=c.who.subject)


async def get_tenant(s: Services, c: AdminCall) -> Any:
    return await s.store.get_tenant(c.tenant)


async def update_tenant(s: Services, c: AdminCall) -> Any:
    return await s.store.update_tenant(c.tenant, name=c.body.name, metadata=c.body.metadata, actor=c.who.subject)


async def delete_tenant(s: Services, c: AdminCall) -> Any:
    await s.store.delete_tenant(c.tenant, actor=c.who.subject)
    return deleted(c.tenant, "tenant")


async def list_teams(s: Services, c: AdminCall) -> Any:
    return paged(await s.store.page_teams(c.tenant, *asked(c)))


async def create_team(s: Services, c: AdminCall) -> Any:
    return await s.store.create_team(c.tenant, c.body.name, actor=c.who.subject)


async def get_team(s: Services, c: AdminCall) -> Any:
    return await s.store.get_team(c.tenant, c.params["id"])


async def delete_team(s: Services, c: AdminCall) -> Any:
    role = ORG_ADMIN if ORG_ADMIN in c.who.roles else TENANT_ADMIN
    try:
        await s.store.delete_team(c.tenant, c.params["id"], actor=c.who.subject, role=role)
    except Outranked as exc:  # as for the budget itself (api/admin/budgets.py)
        raise ApiError(403, str(exc), type="permission_error", code="budget_set_by_org_admin") from None
    except PolicyOutranked as exc:  # as for the policy itself (api/admin/policies.py)
        raise ApiError(403, str(exc), type="permission_error", code="policy_set_by_org_admin") from None
    return deleted(c.params["id"], "team")


_route = partial(Route, needs=STORAGE)
ROUTES = (
    Route("GET", f"{PREFIX}/whoami", ANY, whoami, "The caller's identity and roles", check=anyone),
    _route(
        "GET", T, READ, list_tenants, "List tenants (org-admin: all; tenant-admin, auditor: their own)", check=_readers
    ),
    _route("POST", T, ORG, create_tenant, "Create a tenant", B.CreateTenant, status=201, event="tenant.create"),
    _route("GET", T + "/{tenant}", READ, get_tenant, "Get a tenant"),
    _route(
        "PATCH",
        T + "/{tenant}",
        ORG,
        update_tenant,
        "Rename a tenant and/or replace its metadata (also mends a row whose metadata cannot be read)",
        B.UpdateTenant,
        event="tenant.update",
    ),
    _route(
        "DELETE", T + "/{tenant}", ORG, delete_tenant, "Delete a tenant and everything in it", event="tenant.delete"
    ),
    _route(
        "GET",
        T + "/{tenant}/teams",
        READ,
        list_teams,
        "List teams, oldest first, " + SAYS,
        query=QUERY,
        tenant_must_exist=True,
    ),
    _route(
        "POST",
        T + "/{tenant}/teams",
        WRITE,
        create_team,
        "Create a team",
        B.CreateTeam,
        status=201,
        event="team.create",
    ),
    _route("GET", T + "/{tenant}/teams/{id}", READ, get_team, "Get a team"),
    _route(
        "DELETE",
        T + "/{tenant}/teams/{id}",
        WRITE,
        delete_team,
        "Delete a team (not while it has active keys; with a budget an org-admin set: an org-admin only)",
        event="team.delete",
    ),
)
