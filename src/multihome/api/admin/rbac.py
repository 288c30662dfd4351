"""Who may do what in the admin API. One table, checked before any handler runs (api/admin/dispatch.py).

org-admin: everything. tenant-admin: everything inside its own tenant. auditor: read its own
tenant and its admin events. member: nothing but `whoami`. Denials name the rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...schema.errors import ApiError
from ...schema.principal import AUDITOR, ORG_ADMIN, ORG_GRANTED, TENANT_ADMIN, Principal

# action -> roles that may perform it (org-admin always may). ANY: every caller; the handler narrows.
READ, WRITE, AUDIT, ORG, ANY = "read", "write", "audit", "org", "any"
# Captured content: the tenant's auditor role only, no org-admin bypass (api/admin/captures.py checks it).
CONTENT = "content"
_ALLOWED = {
    READ: frozenset({TENANT_ADMIN, AUDITOR}),
    WRITE: frozenset({TENANT_ADMIN}),
    AUDIT: frozenset({TENANT_ADMIN, AUDITOR}),
    ORG: frozenset(),
}


def authorize(principal: Principal, action: str, tenant_id: str | None) -> None:
    """Raise 403 unless `principal` may perform `action` on `tenant_id` (None: organisation-wide)."""
    if ORG_ADMIN in principal.roles:
        return
    allowed = _ALLOWED[action]
    if not principal.roles & allowed:
        needed = " or ".join(sorted({ORG_ADMIN, *allowed}))
        raise ApiError(
            403,
            f"This needs the role {needed}; your credential has {', '.join(sorted(principal.roles))}. "
            "Ask an org admin for access.",
            type="permission_error",
            code="insufficient_role",
        )
    if tenant_id is None or tenant_id != principal.tenant:
        raise ApiError(
            403,
            f"Your credential belongs to tenant {principal.tenant} and can only manage that tenant.",
            type="permission_error",
            code="other_tenant",
        )


def may_grant(principal: Principal, roles: Iterable[str]) -> bool:
    """Whether `principal` may grant every one of `roles` (and so revoke a key that holds them)."""
    return ORG_ADMIN in principal.roles or ORG_GRANTED.isdisjoint(roles)


def anyone(principal: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    """A route every authenticated caller may use; its handler narrows what it shows or checks the body."""


def who_may(action: str) -> str:
    """The roles that may perform `action`, for the OpenAPI document."""
    if action == ANY:
        return "any authenticated caller"
    if action == CONTENT:
        return "auditor of the tenant only (not org-admin, not tenant-admin)"
    roles = sorted({ORG_ADMIN, *_ALLOWED[action]})
    return " or ".join(roles) + ("" if action == ORG else " (a tenant's own roles: that tenant only)")
