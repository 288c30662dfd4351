"""Admin resource: captured content, `GET /admin/v1/tenants/{tenant}/captures` (auditors only).

A tenant with content capture on (`capture.tenants`, docs/encryption.md "Content capture") has
the prompts and answers of its calls kept, sealed under its `capture` data key. Only the
tenant's own auditor role reads them, not even an org-admin or the tenant's admins (they get
403): the content is the users' conversations, and reading it is itself an audit event
(`capture.read`). A capture of a shredded tenant is listed with `unreadable` instead of content.
"""

from __future__ import annotations

from typing import Any

from ...schema.errors import ApiError
from ...schema.principal import ALL_TENANTS, AUDITOR, Principal
from .pages import query_int
from .rbac import CONTENT
from .route import AdminCall, Needs, Route, Services, listed
from .tenancy import T


def _auditor_only(who: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    if AUDITOR not in who.roles:
        raise ApiError(
            403,
            "Captured prompts and answers are readable only by the tenant's auditor role; your credential has "
            f"{', '.join(sorted(who.roles))}.",
            type="permission_error",
            code="insufficient_role",
        )
    if who.tenant not in (params["tenant"], ALL_TENANTS):
        raise ApiError(
            403,
            f"Your credential belongs to tenant {who.tenant} and can only read that tenant's captures.",
            type="permission_error",
            code="other_tenant",
        )


async def list_captures(s: Services, c: AdminCall) -> Any:
    limit = query_int(c.query, "limit", 1, 100, 20)
    assert limit is not None
    return listed(await s.crypto.captures.page(c.tenant, limit, c.query.get("after") or None))


_NEEDS = Needs(lambda s: s.crypto, "Content capture keeps prompts and answers in the database: set storage.url.")
ROUTES = (
    Route(
        "GET",
        T + "/{tenant}/captures",
        CONTENT,
        list_captures,
        "Captured prompts and answers of this tenant's calls, oldest first (?limit= 1-100, default 20; "
        "?after=<id of the last capture seen>); the tenant's auditor role only; each read is audited",
        query=("limit", "after"),
        event="capture.read",
        refresh=False,
        check=_auditor_only,
        needs=_NEEDS,
    ),
)
