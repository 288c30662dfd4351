"""Admin resource: a tenant's long-term memory namespaces, `/admin/v1/tenants/{tenant}/memory/namespaces`:
per namespace (agent, user) its live records, their bytes and the oldest and newest write, so an operator
sees what is kept and how much without opening it. Never a record's text or metadata: those are sealed."""

from __future__ import annotations

from typing import Any

from .rbac import READ
from .route import AdminCall, Needs, Route, Services, listing
from .tenancy import T


async def list_memory_namespaces(s: Services, c: AdminCall) -> Any:
    return listing(await s.memory.usage(c.tenant))


ROUTES = (
    Route(
        "GET",
        T + "/{tenant}/memory/namespaces",
        READ,
        list_memory_namespaces,
        "The tenant's memory namespaces: agent_id, user_id, default TTL, live records, their plaintext bytes, "
        "oldest and newest write (never content)",
        needs=Needs(lambda s: s.memory, "Agent memory needs storage and a KMS: set storage.url and kms in the config."),
    ),
)
