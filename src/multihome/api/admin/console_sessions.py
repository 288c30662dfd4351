"""Admin resource: ending console sessions, `/admin/v1/console-session-ends` (docs/console.md "Ending sessions").

Ends every console session of a subject of one issuer (an API key by its own id; a token's subject with
its identity.oidc issuer), or of everyone, issued at or before a time (default: now), optionally only
those of one tenant: the simplest shared "not before", which every replica applies from its snapshot
within `storage.refresh_s` (this one before it answers). A session started afterwards is not affected:
the person logs in again. Logouts are listed here too (kind `session`).

Who may: an org-admin ends anyone's, everyone's included. A tenant-admin ends only the sessions of a
subject of its own tenant: the row is scoped to that tenant (it ends no other tenant's viewer), a key must
be its tenant's and hold no role only an org-admin grants, the environment's keys are the organisation's,
and a cut-off it set never ends an org-admin's or auditor's session (a token's roles are known only when
it is shown: storage/console_sessions.py). Everything else is a 403. Each cut-off is an admin change in
the audit trail with whose sessions and the cut-off (`Route.detail`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from ...schema.errors import ApiError, echo
from ...schema.principal import ALL_TENANTS, ORG_ADMIN, TENANT_ADMIN, Principal
from ...storage.console_sessions import API_KEY_ISSUER, STATIC_ISSUER
from ...storage.errors import NotFound, UnreadableRow
from . import bodies as B
from .pages import QUERY, SAYS, asked, paged
from .rbac import WRITE, authorize, may_grant
from .revocations import find_issuer, reaches
from .route import PREFIX, AdminCall, Needs, Route, Services

R = PREFIX + "/console-session-ends"
_ALL = ("false", "0", "no")
_KEY_PREFIX = "key_"  # every managed key's id (storage/ids.py)


def _may(who: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    # An org-admin, or a tenant-admin (of its own tenant: each handler narrows to it).
    if ORG_ADMIN not in who.roles:
        authorize(who, WRITE, who.tenant)


def _refused(message: str, code: str, param: str | None = None) -> ApiError:
    return ApiError(403, message, type="permission_error", param=param, code=code)


async def list_console_session_ends(s: Services, c: AdminCall) -> Any:
    tenant = c.query.get("tenant") or None
    if ORG_ADMIN not in c.who.roles:
        authorize(c.who, WRITE, tenant or c.who.tenant)  # another tenant's: 403 other_tenant
        tenant = c.who.tenant
    found = await s.store.page_console_session_ends(
        *asked(c), tenant_id=tenant, live_only=c.query.get("live", "").lower() not in _ALL
    )
    return paged(found, [_view(s, r) for r in found])


async def end_console_sessions(s: Services, c: AdminCall) -> Any:
    body: B.EndConsoleSessions = c.body
    org = ORG_ADMIN in c.who.roles
    tenant = body.tenant_id
    if not org:
        if body.subject is None:
            raise _refused(
                "Only an org-admin ends everyone's console sessions (of a tenant or of the organisation); "
                "name a subject of your tenant.",
                "insufficient_role",
                "subject",
            )
        authorize(c.who, WRITE, tenant or c.who.tenant)  # another tenant: 403 other_tenant
        tenant = c.who.tenant
    elif (
        tenant is not None and tenant != ALL_TENANTS and s.known_tenant is not None and not await s.known_tenant(tenant)
    ):
        raise ApiError(404, f"Tenant {echo(tenant)} not found.", param="tenant_id", code="not_found")
    issuer = _issuer(s, body)
    if not org:
        await _tenant_admin_may_end(s, c.who, issuer, body)
    not_before = body.not_before
    if isinstance(not_before, int):
        try:
            not_before = dt.datetime.fromtimestamp(not_before, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ApiError(
                400, "not_before is not a usable time in epoch seconds.", param="not_before", code="invalid_value"
            ) from None
    record = await s.store.end_console_sessions(
        subject=body.subject,
        issuer=issuer,
        tenant_id=tenant,
        not_before=not_before,
        ttl_s=s.console_session_ttl_s,
        reason=body.reason,
        actor=c.who.subject,
        role=ORG_ADMIN if org else TENANT_ADMIN,
    )
    return _view(s, record)


def _issuer(s: Services, body: B.EndConsoleSessions) -> str | None:
    """Whose subject the body names, as stored: an identity.oidc issuer's exact `iss`, `api_key` or `static`."""
    if body.subject is None:
        if body.issuer is not None:
            raise ApiError(
                400, "issuer names whose subject: give the subject too.", param="subject", code="invalid_value"
            )
        return None
    if body.issuer is None:
        if body.subject.startswith(_KEY_PREFIX):
            return API_KEY_ISSUER
        if body.subject == "bootstrap-admin" or body.subject.startswith("env:"):
            return STATIC_ISSUER
        raise ApiError(
            400,
            f"Name the issuer of subject {echo(body.subject)}: a token's subject is its issuer's (the name or exact "
            "iss of an identity.oidc issuer); an API key is named by its id (key_...) alone.",
            param="issuer",
            code="invalid_value",
        )
    if body.issuer in (API_KEY_ISSUER, STATIC_ISSUER):
        return body.issuer
    cfg = find_issuer(s, body.issuer)
    if cfg is None:
        names = ", ".join(i.name for i in s.issuers) or "none: identity.oidc is empty"
        raise ApiError(
            400,
            f"issuer must be the name or the exact iss of an issuer in identity.oidc ({names}), or api_key for "
            "an API key's id.",
            param="issuer",
            code="invalid_value",
        )
    return cfg.issuer


async def _tenant_admin_may_end(s: Services, who: Principal, issuer: str | None, body: B.EndConsoleSessions) -> None:
    """403 unless a tenant-admin may end this subject's sessions: its own tenant's key holding no role only an
    org-admin grants, or a token subject of an issuer whose tokens may map to its tenant."""
    subject = body.subject
    assert subject is not None and issuer is not None  # checked before
    if issuer == STATIC_ISSUER:
        raise _refused(
            "The gateway's own keys (identity.admin_key_env, server.api_keys_env) are the organisation's: only an "
            "org-admin ends their console sessions.",
            "insufficient_role",
            "subject",
        )
    if issuer == API_KEY_ISSUER:
        try:
            roles: Any = (await s.store.get_key(who.tenant, subject)).roles
        except NotFound:  # another tenant's key, or none: the same answer, which tells nothing of the other
            raise _refused(
                f"Key {echo(subject)} is not a key of tenant {who.tenant}: a tenant-admin ends the console "
                "sessions of its own tenant's keys only.",
                "other_tenant",
                "subject",
            ) from None
        except UnreadableRow:
            roles = await s.store.key_roles(who.tenant, subject)
        if roles is None or not may_grant(who, roles):  # roles that cannot be read: as an org-admin's key
            raise _refused(
                f"Key {echo(subject)} holds a role only an org-admin grants (org-admin or auditor), or its roles "
                "cannot be read: ask an org admin to end its console sessions.",
                "insufficient_role",
                "subject",
            )
        return
    cfg = find_issuer(s, issuer)
    if cfg is not None and not reaches(cfg, who.tenant):
        raise _refused(
            f"Tokens of issuer '{cfg.name}' never map to tenant {who.tenant}: its subjects are another tenant's.",
            "other_tenant",
            "issuer",
        )


def _view(s: Services, record: Any) -> dict[str, Any]:
    out = {"object": "console_session_end", **msgspec.to_builtins(record)}
    out.pop("session_id", None)  # names one browser's session: of no use to anyone reading the list
    cfg = find_issuer(s, record.issuer) if record.issuer not in (None, API_KEY_ISSUER, STATIC_ISSUER) else None
    out["issuer_name"] = cfg.name if cfg is not None else None
    return out


_NEEDS = Needs(
    lambda s: s.store,
    "Ending console sessions needs storage: set storage.url in the config (without it a logout holds only "
    "in the browser and the gateway process that served it; revoke the key to end its sessions everywhere).",
)
ROUTES = (
    Route(
        "GET",
        R,
        WRITE,
        list_console_session_ends,
        "Ended console sessions still in force: logouts (kind session) and cut-offs (subject, all); org-admin: "
        "all, ?tenant= narrows; tenant-admin: its tenant's; ?live=false also lists those past their expiry "
        "not yet pruned; oldest first, " + SAYS,
        query=("tenant", "live", *QUERY),
        needs=_NEEDS,
        noun="console session end",
        check=_may,
    ),
    Route(
        "POST",
        R,
        WRITE,
        end_console_sessions,
        "End every console session of a subject of an issuer (org-admin: or of everyone; tenant_id narrows; "
        "tenant-admin: a subject of its own tenant) issued at or before not_before (default now); every "
        "replica refuses them within storage.refresh_s",
        B.EndConsoleSessions,
        status=201,
        event="console_sessions.end",
        detail=("kind", "issuer", "subject", "tenant_id", "not_before", "set_by_role", "reason"),
        needs=_NEEDS,
        noun="console session end",
        check=_may,
    ),
)
