"""Who may do what in the admin API. One table, checked before any handler runs.

org-admin: everything. tenant-admin: everything inside its own tenant. auditor: read its own
tenant and its admin events. member: nothing but `whoami`. Denials name the rule.
"""

from __future__ import annotations

from ..schema.principal import AUDITOR, ORG_ADMIN, TENANT_ADMIN, Principal
from ..schema.errors import ApiError

# action -> roles that may perform it (org-admin always may)
READ, WRITE, AUDIT, ORG = "read", "write", "audit", "org"
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
