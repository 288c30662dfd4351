"""Admin resource: OIDC token revocations, `/admin/v1/token-revocations...`: cut a token's (or a
subject's) access before the token's `exp`, on every replica (docs/oidc.md "Revocation").

Who may: org-admin anything, including org-wide revocations (no tenant). A tenant-admin revokes
only for its own tenant: the row is scoped to that tenant, and a tenant-scoped row refuses a
token only when claims.py maps that token to that tenant, so a tenant-admin can never cut
another tenant's users off. Nor those of its own it could not have made: a row records the role
that set it, and one a tenant-admin set refuses no token holding the org-admin or auditor role
(storage/revocations.py); a tenant-admin lifts only the rows a tenant-admin set (403 otherwise).
Auditors and tenant-admins list and read their tenant's rows.
A change is stored (and bumps the state version); this replica applies it before answering,
every other one within `storage.refresh_s`.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

import msgspec

from ...config.oidc import IssuerConfig
from ...schema.errors import ApiError, echo
from ...schema.principal import ORG_ADMIN, TENANT_ADMIN, Principal
from ...storage.errors import NotFound
from ...storage.revocations import SetByOrgAdmin
from . import bodies as B
from .pages import QUERY, SAYS, asked, paged
from .rbac import READ, WRITE, authorize
from .route import PREFIX, AdminCall, Needs, Route, Services

R = PREFIX + "/token-revocations"
_LIVE = ("true", "1", "yes")


def _may_read(who: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    # Who may do this at all; which tenant is checked per handler.
    if ORG_ADMIN not in who.roles:
        authorize(who, READ, who.tenant)


def _may_write(who: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    if ORG_ADMIN not in who.roles:
        authorize(who, WRITE, who.tenant)


async def list_token_revocations(s: Services, c: AdminCall) -> Any:
    tenant = c.query.get("tenant") or None
    if ORG_ADMIN not in c.who.roles:
        authorize(c.who, READ, tenant or c.who.tenant)  # another tenant's: 403 other_tenant
        tenant = c.who.tenant
    issuer = c.query.get("issuer") or None
    if issuer is not None:
        cfg = find_issuer(s, issuer)
        issuer = cfg.issuer if cfg is not None else issuer
    found = await s.store.page_token_revocations(
        tenant,
        *asked(c),
        kind=c.query.get("kind") or None,
        issuer=issuer,
        subject=c.query.get("subject") or None,
        live_only=c.query.get("live", "").lower() in _LIVE,
    )
    return paged(found, [_view(s, r) for r in found])


async def create_token_revocation(s: Services, c: AdminCall) -> Any:
    body: B.CreateTokenRevocation = c.body
    if ORG_ADMIN in c.who.roles:
        tenant = body.tenant_id
    else:
        authorize(c.who, WRITE, body.tenant_id or c.who.tenant)  # another tenant: 403 other_tenant
        tenant = c.who.tenant
    cfg = _issuer(s, body.issuer)
    if tenant is not None and not reaches(cfg, tenant):
        raise ApiError(
            400,
            f"Tokens of issuer '{cfg.name}' never map to tenant {tenant} (see its "
            "claims.tenant_value / claims.tenant_map), so this revocation would never match.",
            param="tenant_id",
            code="invalid_value",
        )
    try:
        record = await s.store.create_token_revocation(
            kind=body.kind,
            issuer=cfg.issuer,
            subject=body.subject,
            jti=body.jti,
            tenant_id=tenant,
            not_before=_time(body.not_before, "not_before"),
            expires_at=_time(body.expires_at, "expires_at"),
            reason=body.reason,
            actor=c.who.subject,
            max_token_lifetime_s=cfg.max_token_lifetime_s,
            role=_role(c.who),
        )
    except NotFound as exc:
        if exc.kind != "tenant":
            raise
        raise ApiError(404, f"Tenant {echo(exc.id)} not found.", param="tenant_id", code="not_found") from None
    return _view(s, record)


async def get_token_revocation(s: Services, c: AdminCall) -> Any:
    tenant = None if ORG_ADMIN in c.who.roles else c.who.tenant
    return _view(s, await s.store.get_token_revocation(c.params["id"], tenant_id=tenant))


async def delete_token_revocation(s: Services, c: AdminCall) -> Any:
    tenant = None if ORG_ADMIN in c.who.roles else c.who.tenant  # others' rows (and org-wide ones): 404
    try:
        gone = await s.store.delete_token_revocation(
            c.params["id"], tenant_id=tenant, actor=c.who.subject, role=_role(c.who)
        )
    except SetByOrgAdmin as exc:
        message = str(exc)
        raise ApiError(
            403, f"{message[:1].upper()}{message[1:]}.", type="permission_error", code="insufficient_role"
        ) from None

    return {"id": gone.id, "object": "token_revocation.deleted", "deleted": True, "tenant_id": gone.tenant_id}


def _role(who: Principal) -> str:
    """The role a revocation is set or lifted with (only these two may write)."""
    return ORG_ADMIN if ORG_ADMIN in who.roles else TENANT_ADMIN


def find_issuer(s: Services, value: str) -> IssuerConfig | None:
    for cfg in s.issuers:
        if value in (cfg.name, cfg.issuer):
            return cfg
    return None


def _issuer(s: Services, value: str) -> IssuerConfig:
    cfg = find_issuer(s, value)
    if cfg is not None:
        return cfg
    if not s.issuers:
        raise ApiError(
            400,
            "This gateway trusts no OIDC issuer (identity.oidc is empty), so it accepts no token "
            "to revoke. API keys are revoked with DELETE /admin/v1/tenants/{tenant}/keys/{id}.",
            param="issuer",
            code="invalid_value",
        )
    names = ", ".join(i.name for i in s.issuers)
    raise ApiError(
        400,
        f"issuer must be the name or the exact iss of an issuer in identity.oidc ({names}); the "
        "iss is compared exactly, so a trailing slash matters.",
        param="issuer",
        code="invalid_value",
    )


def _view(s: Services, record: Any) -> dict[str, Any]:
    cfg = find_issuer(s, record.issuer)
    now = dt.datetime.now(dt.UTC)
    return {
        "object": "token_revocation",
        **msgspec.to_builtins(record),
        "issuer_name": cfg.name if cfg is not None else None,
        "live": record.live_at(now),
    }


def reaches(cfg: IssuerConfig, tenant: str) -> bool:
    """Can a token of this issuer map to `tenant` at all (claims.py: tenant_value, or tenant_map's values)?"""
    claims = cfg.claims
    if claims.tenant_value is not None:
        return tenant == claims.tenant_value
    if claims.tenant_map:
        return tenant in claims.tenant_map.values()
    return True  # the tenant claim's value is the tenant id


def _time(value: Any, field: str) -> dt.datetime | None:
    """An RFC 3339 time (must carry its offset) or epoch seconds (a token's exp/iat) as a datetime."""
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise ApiError(
            400, f"{field} is not a usable time in epoch seconds.", param=field, code="invalid_value"
        ) from None


_NEEDS = Needs(lambda s: s.store, "Token revocations need storage: set storage.url in the config.")
_route = partial(
    Route,
    noun="token revocation",
    needs=_NEEDS,
    choices={"kind": "jti (one token), subject (a subject's tokens issued up to not_before)"},
)
ROUTES = (
    _route(
        "GET",
        R,
        READ,
        list_token_revocations,
        "Token revocations, oldest first (org-admin: all, ?tenant= narrows; tenant-admin and auditor: their "
        "tenant's); ?kind=, ?issuer=, ?subject=, ?live=true filter; " + SAYS,
        query=("tenant", "kind", "issuer", "subject", "live", *QUERY),
        check=_may_read,
    ),
    _route(
        "POST",
        R,
        WRITE,
        create_token_revocation,
        "Revoke OIDC tokens before their exp: one token by its jti, or every token of a subject issued up to "
        "not_before; every replica refuses them within storage.refresh_s",
        B.CreateTokenRevocation,
        status=201,
        event="token_revocation.create",
        check=_may_write,
    ),
    _route("GET", R + "/{id}", READ, get_token_revocation, "A token revocation", check=_may_read),
    _route(
        "DELETE",
        R + "/{id}",
        WRITE,
        delete_token_revocation,
        "Lift a token revocation: the tokens it refused are accepted again (one an org-admin set: an org-admin only)",
        event="token_revocation.delete",
        check=_may_write,
    ),
)
