"""Whether the principal stored with queued work (a background response: api/responses/runner.py, an agent
run's every model step) may still call when the work runs.

No credential is presented then, so what `Authenticator` asks of every request is asked again of the stored
principal: its tenant still exists, and no stored row of it that may restrict it (a budget, a policy) is
unreadable. A deleted (offboarded) tenant's keys and budgets are gone with it, not its queued responses:
run, they would call models with no budget left to stop them, and nobody could cancel them. A key revoked
after the create does not stop the work (docs/responses.md): its tenant's admins can still cancel it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..schema.errors import ApiError
from ..schema.principal import ALL_TENANTS, Principal
from .authenticator import Refusals, check_refused

# Raises the ApiError (403) the work ends with; returns when the principal may call.
Admitted = Callable[[Principal], Awaitable[None]]


def stored_caller(known: Callable[[str], Awaitable[bool]], refusals: Refusals) -> Admitted:
    """`known`: whether a tenant id exists (a stored tenant, or the static keys'; looked for again after a
    miss: it may be new on another replica). `refusals`: the tenants whose stored rows cannot be read."""

    async def admitted(principal: Principal) -> None:
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

    return admitted
