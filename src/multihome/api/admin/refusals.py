"""What the admin API still serves to a tenant refused because one of its stored rows cannot be read.

Such a tenant's calls to models are refused (403 `tenant_unavailable`, identity/authenticator.py): the
row may hold a restriction (a budget, a deny, a revocation). None of those rows restricts the admin API,
so refusing its admins there too would only lock out the people who must mend the row. They keep the
calls that read what is wrong and remove or replace it: the tenant's own stored rows (the tables the
snapshot reads) and its admin events. Everything else (usage, agent runs, memory, MCP servers, what the
stateful runtime holds, policy explain) answers 403 `tenant_unavailable`, as its model calls do, until the
row is mended. An org-admin is never refused here; a token an unreadable token revocation may hold never
gets this far (identity.authenticator.TenantRefused). docs/storage.md, "A row the gateway cannot read".
"""

from __future__ import annotations

from ...identity.authenticator import TENANT_UNAVAILABLE
from ...schema.errors import ApiError
from ...schema.principal import ORG_ADMIN, Principal

# The routes (operation names) a refused tenant's tenant-admins and auditors may still call (RBAC applies).
MENDING = frozenset(
    {
        "whoami",
        "list_tenants",
        "get_tenant",
        "tenant_events",
        "list_teams",
        "get_team",
        "create_team",
        "delete_team",
        "list_keys",
        "get_key",
        "create_key",
        "revoke_key",
        "list_policies",
        "get_policy",
        "create_policy",
        "update_policy",
        "delete_policy",
        "list_entitlements",
        "get_entitlement",
        "list_stateful_pins",
        "get_stateful_pin",
        "list_budgets",
        "get_budget",
        "create_budget",
        "update_budget",
        "delete_budget",
        "list_token_revocations",
        "get_token_revocation",
        "create_token_revocation",
        "delete_token_revocation",
    }
)


def check_refused(refusals: object, route: str, principal: Principal) -> None:
    """403 `tenant_unavailable` unless `route` is one a refused tenant's admins may call (or it is not refused).
    `refusals`: identity's Refusals (storage.service.StorageService), None without storage."""
    refused = getattr(refusals, "refused", None)
    if not refused or ORG_ADMIN in principal.roles or route in MENDING:
        return
    why = refused.get(principal.tenant)
    if why is None:
        return
    raise ApiError(
        403,
        f"Tenant {principal.tenant}'s stored configuration cannot be read ({why}), so its calls are refused until "
        "the row is fixed. Its admins may still read and mend its stored rows (tenants, teams, keys, policies, "
        "entitlements, stateful pins, budgets, token revocations, admin events); this call is not one of them.",
        type="permission_error",
        code=TENANT_UNAVAILABLE,
    )
