"""Whether the principal stored with queued work (a background response: api/responses/runner.py, an agent
run's every model step) may still call when the work runs.

No credential is presented then, so what `Authenticator` asks of every request is asked again of the stored
principal: its tenant still exists, no stored row of it that may restrict it (a budget, a policy) is
unreadable, the API key it was created with (by its id) is still usable, and no token revocation covers the
OIDC token it was created with (its issuer, jti and iat are kept with the work; its exp is not held to it). A deleted (offboarded) tenant's
keys and budgets are gone with it, not its queued responses: run, they would call models with no budget left
to stop them, and nobody could cancel them. A key revoked (or expired) after the create would otherwise keep
its holder's queued and running work calling models and tools: a leaked key revoked at once could still
spend up to the tenant's cap of background runs, each many agent steps long."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..schema.errors import ApiError
from ..schema.principal import ALL_TENANTS, Principal
from .authenticator import Refusals, check_refused
from .oidc import untrusted_issuer

# Raises the ApiError (401, 403) the work ends with; returns when the principal may call.
Admitted = Callable[[Principal], Awaitable[None]]
# The same for a stored principal and what its work keeps of the OIDC token it was created with (None: a key).
StoredCaller = Callable[[Principal, Mapping[str, Any] | None], Awaitable[None]]
# A managed key by its id, if it is still usable (not revoked, not expired): its record, else None.
UsableKey = Callable[[str], Awaitable[Any]]
# Raises 401 token_revoked if a live revocation covers the token these facts (iss, jti, iat) describe.
Revoked = Callable[[Principal, Mapping[str, Any]], None]


def bound(caller: StoredCaller | None, token: Mapping[str, Any] | None) -> Admitted | None:
    """`caller` for one piece of work, created with `token` (an agent run asks before each model step)."""
    if caller is None:
        return None
    check = caller

    async def admitted(principal: Principal) -> None:
        await check(principal, token)

    return admitted


def stored_caller(
    known: Callable[[str], Awaitable[bool]],
    refusals: Refusals,
    usable_key: UsableKey | None = None,
    revoked: Revoked | None = None,
) -> StoredCaller:
    """`known`: whether a tenant id exists (a stored tenant, or the static keys'; looked for again after a
    miss: it may be new on another replica). `refusals`: the tenants whose stored rows cannot be read.
    `usable_key`: a managed key's record by its id while it is usable (None: keys are not asked again).
    `revoked`: the OIDC verifier's check of a stored token's facts (None: no issuer is trusted)."""

    async def admitted(principal: Principal, token: Mapping[str, Any] | None = None) -> None:
        tenant = principal.tenant
        if tenant != ALL_TENANTS and not await known(tenant):
            raise ApiError(
                403,
                f"Tenant {tenant} has been deleted (offboarded), so its queued work is not run: nothing was sent "
                "to a model.",
                type="permission_error",
                code="unknown_tenant",
            )
        if refusals.refused:  # empty unless a stored row is unreadable
            check_refused(refusals, principal, token=principal.source.startswith("oidc:"))
        key_id = principal.key_id
        if usable_key is not None and key_id is not None and principal.source == "api_key":
            record = await usable_key(key_id)
            if record is None or record.tenant_id != tenant:
                raise ApiError(
                    401,
                    f"The API key {key_id} this work was created with has been revoked or has expired since, so it "
                    "is not run further: no model is called for it.",
                    code="invalid_api_key",
                )
        if principal.source.startswith("oidc:") and token is not None:
            if revoked is None:  # no issuer is trusted any more: none vouches for the token that made it
                raise untrusted_issuer()
            revoked(principal, token)  # a revocation made since the create, or its issuer no longer trusted

    return admitted
