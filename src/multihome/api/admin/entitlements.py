"""Admin resource: a tenant's model entitlements (time-bound model licences, granted by an org-admin)."""

from __future__ import annotations

from functools import partial
from typing import Any

from ...policy.model import glob_matches
from ...storage.entitlements import check_model_group
from ...storage.rows import Unreadable
from . import bodies as B
from .config_names import unknown_name
from .pages import QUERY, SAYS, asked, paged
from .rbac import ORG, READ
from .route import STORAGE, AdminCall, Route, Services, unreadable_row
from .tenancy import T

E = T + "/{tenant}/entitlements"


async def list_entitlements(s: Services, c: AdminCall) -> Any:
    return paged(await s.store.page_entitlements(c.tenant, *asked(c), include_revoked=True))


async def grant_entitlement(s: Services, c: AdminCall) -> Any:
    body: B.GrantEntitlement = c.body
    check_model_group(body.model_group)  # what is wrong with the name itself first, then whether it is known
    if not any(glob_matches(body.model_group, group) for group in s.model_groups):  # a name, or a family glob
        raise unknown_name(
            "entitlement", "model_group", body.model_group, "model group", s.model_groups, "so it would license no call"
        )
    return await s.store.grant_entitlement(
        c.tenant,
        model_group=body.model_group,
        starts_on=body.starts_on,
        ends_on=body.ends_on,
        exclusive=body.exclusive,
        note=body.note,
        actor=c.who.subject,
    )


async def get_entitlement(s: Services, c: AdminCall) -> Any:
    return await s.store.get_entitlement(c.tenant, c.params["id"])


async def revoke_entitlement(s: Services, c: AdminCall) -> Any:
    done = await s.store.revoke_entitlement(c.tenant, c.params["id"], actor=c.who.subject)
    return unreadable_row(done, revoked=True) if isinstance(done, Unreadable) else done


_route = partial(Route, needs=STORAGE)
ROUTES = (
    _route(
        "GET",
        E,
        READ,
        list_entitlements,
        "List model entitlements, oldest first, " + SAYS,
        query=QUERY,
        tenant_must_exist=True,
    ),
    _route(
        "POST",
        E,
        ORG,
        grant_entitlement,
        "Grant a time-bound model licence",
        B.GrantEntitlement,
        status=201,
        event="entitlement.grant",
    ),
    _route("GET", E + "/{id}", READ, get_entitlement, "Get an entitlement"),
    _route("DELETE", E + "/{id}", ORG, revoke_entitlement, "Revoke an entitlement", event="entitlement.revoke"),
)
