"""Admin resource: a tenant's API keys (the secret is shown once, on create; never the hash)."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from ...policy.model import glob_matches, pattern_problem
from ...schema.errors import ApiError, echo
from ...schema.principal import AUDITOR, ORG_ADMIN, ROLES, Principal
from ...storage.apikeys import KEY_MAX_LIFETIME_DAYS
from ...storage.errors import NotFound, UnreadableRow
from ...storage.rows import Unreadable
from . import bodies as B
from .pages import QUERY, SAYS, asked, paged
from .rbac import READ, WRITE, may_grant
from .route import STORAGE, AdminCall, Route, Services, unreadable_row
from .tenancy import T

K = T + "/{tenant}/keys"


async def list_keys(s: Services, c: AdminCall) -> Any:
    found = await s.store.page_keys(c.tenant, *asked(c))
    return paged(found, [B.key_view(k) for k in found])


async def create_key(s: Services, c: AdminCall) -> Any:
    body: B.CreateKey = c.body
    unknown = [r for r in body.roles if r not in ROLES]
    if unknown:
        raise ApiError(400, f"Unknown role {unknown[0]}; roles are {', '.join(ROLES)}.", param="roles")
    _check_grant(c.who, body.roles)
    if body.scopes_models is not None:
        _check_model_scope(body.scopes_models, s.model_groups)
    record, secret = await s.store.create_key(
        c.tenant,
        name=body.name,
        team_id=body.team_id,
        roles=body.roles,
        scopes_models=body.scopes_models,
        scopes_endpoints=body.scopes_endpoints,
        expires_at=_expires_at(body),
        metadata=body.metadata,
        actor=c.who.subject,
    )
    return B.key_view(record, secret)


def _check_model_scope(patterns: list[str], groups: frozenset[str]) -> None:
    """400 unless each of a key's `scopes_models` is a group name or a family glob (`gpt-4o*`) as policy reads them
    at call time (policy.model.glob_matches), and matches a configured group: a typo would be a key that calls
    nothing of it."""
    if not patterns:  # an empty scope is a key that calls no model: a slip for "any" (null), never meant
        raise ApiError(400, "scopes_models is empty: omit it (or null) for every model group.", param="scopes_models")
    for i, pattern in enumerate(patterns):
        problem = pattern_problem(f"scopes_models[{i}]", pattern)
        if problem is not None:
            raise ApiError(400, f"Invalid {problem}.", param="scopes_models", code="invalid_value")
    missing = sorted({p for p in patterns if not any(glob_matches(p, g) for g in groups)})
    if missing:
        raise ApiError(
            400,
            f"scopes_models names unknown model groups: {', '.join(echo(m) for m in missing)}.",
            param="scopes_models",
        )


def _check_grant(who: Principal, roles: list[str]) -> None:
    """403 unless `who` may grant every role in `roles`: org-admin and auditor are an org-admin's to grant.

    An auditor reads its tenant's captured prompts and answers, which the tenant's own admins may not
    (api/admin/captures.py); a tenant-admin that could issue an auditor key would read them through it.
    """
    _may_hold(who, roles, "issue", "roles", "grant the {role} role")


def _may_hold(who: Principal, roles: Any, verb: str, param: str | None, ask: str) -> None:
    """403 `insufficient_role` unless `who` may grant every one of `roles`: what it may not grant, it may not
    `verb` either (a tenant-admin revoking its tenant's auditor key would end the oversight of itself)."""
    if may_grant(who, roles):
        return
    for role in (ORG_ADMIN, AUDITOR):  # the stronger named first
        if role in roles:
            raise ApiError(
                403,
                f"Only an org-admin can {verb} {role} keys; ask an org admin to {ask.format(role=role)}.",
                type="permission_error",
                param=param,
                code="insufficient_role",
            )


async def _may_revoke(s: Services, c: AdminCall) -> None:
    """A tenant-admin revokes the keys it could have issued."""
    await _may_change(s, c.who, c.tenant, c.params["id"], "revoke", None)


def privileged_key(key_id: str, roles: tuple[str, ...], verb: str, param: str | None) -> ApiError:
    """The 403 `_may_change` answers, for a key the store found holding `roles` only an org-admin grants (empty:
    its roles cannot be read)."""
    for role in (ORG_ADMIN, AUDITOR):  # the stronger named first, as _may_hold
        if role in roles:
            return ApiError(
                403,
                f"Only an org-admin can {verb} {role} keys; ask an org admin to {verb} it.",
                type="permission_error",
                param=param,
                code="insufficient_role",
            )
    return ApiError(
        403,
        f"Key {echo(key_id)}'s roles cannot be read, so it may hold a role only an org-admin grants: "
        f"ask an org admin to {verb} it.",
        type="permission_error",
        param=param,
        code="insufficient_role",
    )


async def check_key_scope(s: Services, who: Principal, tenant: str, key_id: str) -> None:
    """A tenant-admin sets no policy on a key holding a role it could not grant (a deny on an org-admin's key is
    a change to that key; a budget's store checks the same in its write). An unknown key is left to the store
    (404 naming scope_id)."""
    if ORG_ADMIN in who.roles:
        return
    try:
        await _may_change(s, who, tenant, key_id, "set a budget or policy on", "scope_id")
    except NotFound:
        pass


async def _may_change(s: Services, who: Principal, tenant: str, key_id: str, verb: str, param: str | None) -> None:
    """403 unless `who` may grant every role the key holds. A key whose row cannot be read is judged by its
    roles read on their own; if they cannot be told either, it is an org-admin's (as an org-admin's budget
    that cannot be read: api/admin/budgets.py)."""
    try:
        roles: Any = (await s.store.get_key(tenant, key_id)).roles
    except UnreadableRow:
        roles = await s.store.key_roles(tenant, key_id)
        if roles is None:
            raise privileged_key(key_id, (), verb, param) from None
    _may_hold(who, roles, verb, param, f"{verb} it")


def _expires_at(body: B.CreateKey) -> dt.datetime | None:
    if body.expires_in_days is None:
        return body.expires_at
    if body.expires_at is not None:
        raise ApiError(
            400, "Send expires_at or expires_in_days, not both.", param="expires_in_days", code="invalid_value"
        )
    if not 0 < body.expires_in_days <= KEY_MAX_LIFETIME_DAYS:
        raise ApiError(
            400,
            f"expires_in_days must be more than 0 and at most {KEY_MAX_LIFETIME_DAYS} (100 "
            "years); leave it out for a key that does not expire.",
            param="expires_in_days",
            code="invalid_value",
        )
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=body.expires_in_days)


async def get_key(s: Services, c: AdminCall) -> Any:
    return B.key_view(await s.store.get_key(c.tenant, c.params["id"]))


async def revoke_key(s: Services, c: AdminCall) -> Any:
    if ORG_ADMIN not in c.who.roles:
        await _may_revoke(s, c)
    done = await s.store.revoke_key(c.tenant, c.params["id"], actor=c.who.subject)
    return unreadable_row(done, revoked=True) if isinstance(done, Unreadable) else B.key_view(done)


_route = partial(Route, needs=STORAGE, response=B.KeyView)
ROUTES = (
    _route(
        "GET",
        K,
        READ,
        list_keys,
        "List API keys (never their secrets), oldest first, revoked ones too, " + SAYS,
        response=None,
        query=QUERY,
        tenant_must_exist=True,
    ),
    _route(
        "POST",
        K,
        WRITE,
        create_key,
        "Create an API key; the secret is shown once (the auditor and org-admin roles: an org-admin grants them)",
        B.CreateKey,
        status=201,
        event="key.create",
    ),
    _route("GET", K + "/{id}", READ, get_key, "Get an API key"),
    _route(
        "DELETE",
        K + "/{id}",
        WRITE,
        revoke_key,
        "Revoke an API key (every replica within a second); one whose stored row cannot be read is revoked "
        "too, and answered as an unreadable_row with revoked: true (a key with the auditor or org-admin role: "
        "an org-admin revokes it)",
        event="key.revoke",
    ),
)
