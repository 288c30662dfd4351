"""Every admin route, in one list: the resource modules' `ROUTES`, in the order they are matched.

A new admin resource is a module beside these with its own `ROUTES`, added to `RESOURCES` below;
the dispatcher, the OpenAPI document, the audit event table and the CLI pick it up from here.
"""

from __future__ import annotations

from . import (
    audit,
    budgets,
    captures,
    config_reload,
    console_sessions,
    contracts,
    credentials,
    entitlements,
    keys,
    mcp_servers,
    memory,
    pins,
    policies,
    revocations,
    runs,
    state,
    tenancy,
    usage,
)
from .route import Route

RESOURCES = {
    "tenancy": tenancy,
    "keys": keys,
    "policies": policies,
    "entitlements": entitlements,
    "stateful_pins": pins,
    "budgets": budgets,
    "revocations": revocations,
    "console_sessions": console_sessions,
    "usage": usage,
    "contracts": contracts,
    "audit": audit,
    "provider_credentials": credentials,
    "captures": captures,
    "mcp_servers": mcp_servers,
    "state": state,
    "config": config_reload,
    "runs": runs,
    "memory": memory,
}
ROUTES: tuple[Route, ...] = tuple(route for module in RESOURCES.values() for route in module.ROUTES)
BY_NAME: dict[str, Route] = {route.name: route for route in ROUTES}
if len(BY_NAME) != len(ROUTES):  # the operation names are the OpenAPI operationIds and the CLI's handles
    raise RuntimeError("two admin routes share a handler name")
