"""A read-only caller (an auditor's credential with no role that writes) reads a tenant's stored state and never
changes it: the model API's routes that write memory, conversations or stored responses refuse it, and so do
the model calls (chat, embeddings, messages, responses), which spend the tenant's budget."""

from __future__ import annotations

from ..policy.pins import MEMORY_EMBEDDING
from ..schema.errors import ApiError
from ..schema.principal import Principal

INSUFFICIENT_ROLE = "insufficient_role"
# What a Responses call that keeps state writes (its refusal names it): the door's and route explain's words.
STORED_STATE = "a stored response (store, background or a conversation's turn)"


def may_write(principal: Principal, what: str) -> None:
    """Refuse (403, as a role is refused in the admin API) a read-only caller's change to stored state: an
    auditor's credential reads the tenant's memory, conversations and stored responses, never writes them."""
    if principal.read_only:
        raise write_refusal(principal, what)


def write_refusal(principal: Principal, what: str) -> ApiError:
    """The 403 a read-only caller's change to stored state (`what`) gets."""
    return read_only_refusal(principal, f"does not change it: {what}")


def explained_refusal(principal: Principal, endpoint: str, work: str | None) -> ApiError | None:
    """The refusal route explain shows for a call `principal` would make (`work`: the kind of stateful work, as
    `Call.work`), None when it would not be refused for its role. Explain only: the doors refuse by themselves."""
    if not principal.read_only or work == MEMORY_EMBEDDING:  # a memory search's embedding is a read
        return None
    if work is None:
        return model_call_refusal(principal, endpoint)
    return write_refusal(principal, STORED_STATE)


def model_call_refusal(principal: Principal, endpoint: str) -> ApiError:
    """The 403 a read-only caller's model call on `endpoint` gets (and what route and policy explain say of it)."""
    return read_only_refusal(principal, f"calls no model (a call spends the tenant's budget): {endpoint}")


def read_only_refusal(principal: Principal, why: str) -> ApiError:
    """The 403 `insufficient_role` of a read-only caller, naming its roles; `why`: what it may not do."""
    return ApiError(
        403,
        f"This credential has the role {', '.join(sorted(principal.roles))}, which reads stored state and {why} "
        "needs a member, tenant-admin or org-admin credential.",
        type="permission_error",
        code=INSUFFICIENT_ROLE,
    )
