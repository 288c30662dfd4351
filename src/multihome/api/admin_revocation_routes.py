"""Admin API for OIDC token revocations, `/admin/v1/token-revocations...`: cut a token's (or a
subject's) access before the token's `exp`, on every replica (docs/oidc.md "Revocation").

    GET    /admin/v1/token-revocations        list (?tenant=&kind=&issuer=&subject=&live=true)
    POST   /admin/v1/token-revocations        revoke one token (kind jti) or a subject's tokens (kind subject)
    GET    /admin/v1/token-revocations/{id}   one revocation
    DELETE /admin/v1/token-revocations/{id}   lift it: the tokens it refused work again

Who may: org-admin anything, including org-wide revocations (no tenant). A tenant-admin revokes
only for its own tenant: the row is scoped to that tenant, and a tenant-scoped row refuses a
token only when claims.py maps that token to that tenant, so a tenant-admin can never cut
another tenant's users off. Auditors and tenant-admins list and read their tenant's rows.

Mount by wrapping the admin handler:
`admin = RevocationAdminRoutes(store, config.identity.oidc, after_change, fallback=admin)`.
A change is stored (and bumps the state version); this replica applies it before answering
(`after_change`), every other one within `storage.refresh_s`.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from ..config.oidc import IssuerConfig
from ..schema.principal import ORG_ADMIN, Principal
from ..schema.errors import ApiError
from ..storage.errors import NotFound
from . import admin_bodies as B
from .admin_rbac import READ, WRITE, authorize
from .admin_link import AdminLink
from .admin_routes import _r

P = "/admin/v1/token-revocations"
ROUTES = [
    _r("GET", P, "revocations-read", "list_token_revocations",
       "Token revocations (org-admin: all, ?tenant= narrows; tenant-admin and auditor: their tenant's); "
       "?kind=, ?issuer=, ?subject=, ?live=true filter", query=("tenant", "kind", "issuer", "subject", "live")),
    _r("POST", P, "revocations-write", "create_token_revocation",
       "Revoke OIDC tokens before their exp: one token by its jti, or every token of a subject issued up to "
       "not_before; every replica refuses them within storage.refresh_s", B.CreateTokenRevocation),
    _r("GET", P + "/{id}", "revocations-read", "get_token_revocation", "A token revocation"),
    _r("DELETE", P + "/{id}", "revocations-write", "delete_token_revocation",
       "Lift a token revocation: the tokens it refused are accepted again"),
]
_LIVE = ("true", "1", "yes")


class RevocationAdminRoutes(AdminLink):
    routes = ROUTES
    noun = "token revocation"
    needs_storage = "Token revocations need storage"
    choices = {"kind": "jti (one token), subject (a subject's tokens issued up to not_before)"}

    def __init__(self, store, issuers: list[IssuerConfig] | tuple = (), after_change=None, fallback=None) -> None:
        super().__init__(store, after_change, fallback)
        self.issuers = list(issuers)  # identity.oidc: revocations name one of these

    def authorize(self, principal: Principal, route, params) -> None:
        # Who may do this at all; which tenant is checked per handler.
        if ORG_ADMIN not in principal.roles:
            authorize(principal, WRITE if route.action == "revocations-write" else READ, principal.tenant)

    # -- handlers: (principal, path params, body, query) -> (status, json-able) -----------------------
    async def list_token_revocations(self, who, p, body, q):
        tenant = q.get("tenant") or None
        if ORG_ADMIN not in who.roles:
            authorize(who, READ, tenant or who.tenant)  # another tenant's: 403 other_tenant
            tenant = who.tenant
        issuer = q.get("issuer") or None
        if issuer is not None:
            cfg = self._find(issuer)
            issuer = cfg.issuer if cfg is not None else issuer
        rows = await self.store.list_token_revocations(
            tenant, kind=q.get("kind") or None, issuer=issuer, subject=q.get("subject") or None,
            live_only=q.get("live", "").lower() in _LIVE)
        return 200, {"object": "list", "data": [self._view(r) for r in rows]}

    async def create_token_revocation(self, who, p, body: B.CreateTokenRevocation, q):
        if ORG_ADMIN in who.roles:
            tenant = body.tenant_id
        else:
            authorize(who, WRITE, body.tenant_id or who.tenant)  # another tenant: 403 other_tenant
            tenant = who.tenant
        cfg = self._issuer(body.issuer)
        if tenant is not None and not _reaches(cfg, tenant):
            raise ApiError(400, f"Tokens of issuer '{cfg.name}' never map to tenant {tenant} (see its "
                           "claims.tenant_value / claims.tenant_map), so this revocation would never match.",
                           param="tenant_id", code="invalid_value")
        try:
            record = await self.store.create_token_revocation(
                kind=body.kind, issuer=cfg.issuer, subject=body.subject, jti=body.jti, tenant_id=tenant,
                not_before=_time(body.not_before, "not_before"), expires_at=_time(body.expires_at, "expires_at"),
                reason=body.reason, actor=who.subject, max_token_lifetime_s=cfg.max_token_lifetime_s)
        except NotFound as exc:
            if exc.kind != "tenant":
                raise
            raise ApiError(404, f"Tenant {exc.id} not found.", param="tenant_id", code="not_found") from None
        return 201, self._view(record)

    async def get_token_revocation(self, who, p, body, q):
        tenant = None if ORG_ADMIN in who.roles else who.tenant
        return 200, self._view(await self.store.get_token_revocation(p["id"], tenant_id=tenant))

    async def delete_token_revocation(self, who, p, body, q):
        tenant = None if ORG_ADMIN in who.roles else who.tenant  # others' rows (and org-wide ones): 404
        gone = await self.store.delete_token_revocation(p["id"], tenant_id=tenant, actor=who.subject)
        return 200, {"id": gone.id, "object": "token_revocation.deleted", "deleted": True, "tenant_id": gone.tenant_id}

    # -- helpers --------------------------------------------------------------------------------------
    def _find(self, value: str) -> IssuerConfig | None:
        for cfg in self.issuers:
            if value in (cfg.name, cfg.issuer):
                return cfg
        return None

    def _issuer(self, value: str) -> IssuerConfig:
        cfg = self._find(value)
        if cfg is not None:
            return cfg
        if not self.issuers:
            raise ApiError(400, "This gateway trusts no OIDC issuer (identity.oidc is empty), so it accepts no token "
                           "to revoke. API keys are revoked with DELETE /admin/v1/tenants/{tenant}/keys/{id}.",
                           param="issuer", code="invalid_value")
        names = ", ".join(c.name for c in self.issuers)
        raise ApiError(400, f"issuer must be the name or the exact iss of an issuer in identity.oidc ({names}); the "
                       "iss is compared exactly, so a trailing slash matters.", param="issuer", code="invalid_value")

    def _view(self, record) -> dict:
        cfg = self._find(record.issuer)
        now = dt.datetime.now(dt.timezone.utc)
        return {"object": "token_revocation", **msgspec.to_builtins(record),
                "issuer_name": cfg.name if cfg is not None else None, "live": record.live_at(now)}


def _reaches(cfg: IssuerConfig, tenant: str) -> bool:
    """Can a token of this issuer map to `tenant` at all (claims.py: tenant_value, or tenant_map's values)?"""
    claims = cfg.claims
    if claims.tenant_value is not None:
        return tenant == claims.tenant_value
    if claims.tenant_map:
        return tenant in claims.tenant_map.values()
    return True  # the tenant claim's value is the tenant id


def _time(value, field: str) -> dt.datetime | None:
    """An RFC 3339 time (must carry its offset) or epoch seconds (a token's exp/iat) as a datetime."""
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ApiError(400, f"{field} is not a usable time in epoch seconds.", param=field,
                       code="invalid_value") from None
