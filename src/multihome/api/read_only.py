"""A read-only caller (an auditor's credential with no role that writes) reads a tenant's stored state and never
changes it: the model API's routes that write memory, conversations or stored responses refuse it, and so do
the model calls (chat, embeddings, messages, responses), which spend the tenant's budget."""

from __future__ import annotations

from ..schema.errors import ApiError
from ..schema.principal import Principal

INSUFFICIENT_ROLE = "insufficient_role"


def may_write(principal: Principal, what: str) -> None:
    """Refuse (403, as a role is refused in the admin API) a read-only caller's change to stored state: an
    auditor's credential reads the tenant's memory, conversations and stored responses, never writes them."""
    if principal.read_only:
        raise read_only_refusal(principal, f"does not change it: {what}")


def read_only_refusal(principal: Principal, why: str) -> ApiError:
    """The 403 `insufficient_role` of a read-only caller, naming its roles; `why`: what it may not do."""
    return ApiError(
        403,
        f"This credential has the role {', '.join(sorted(principal.roles))}, which reads stored state and {why} "
        "needs a member, tenant-admin or org-admin credential.",
        type="permission_error",
        code=INSUFFICIENT_ROLE,
    )
