"""Admin resource: a tenant's long-term memory namespaces, `/admin/v1/tenants/{tenant}/memory/namespaces`:
per namespace (agent, user) its live records, their bytes and the oldest and newest write, so an operator
sees what is kept and how much without opening it. Never a record's text or metadata: those are sealed.

`.../memory/namespaces/reembed` moves one namespace to the configured embedding model, a batch per call
(state/memory/reembed.py; `multihome memory reembed` calls it until it answers `completed`). The tenant's
admins may move its namespaces; another tenant's are not found (404), as if they did not exist.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec

from ...schema.errors import ApiError
from ...schema.memory import check_id
from ...schema.principal import ORG_ADMIN, Principal
from ...state.memory.embedder import Caller, SpaceUnavailable
from ...state.memory.reembed import DEFAULT_BATCH, MAX_BATCH, Unchanged, step
from ..memory_embeddings import space_refusal
from . import bodies as B
from .pages import QUERY, SAYS, asked, paged
from .rbac import READ, WRITE, authorize
from .route import AdminCall, Needs, Route, Services
from .tenancy import T

_MEMORY = Needs(lambda s: s.memory, "Agent memory needs storage and a KMS: set storage.url and kms in the config.")


class ReembedNamespace(B._Body):
    """One batch of moving a namespace to the configured embedding model (call again until `completed`)."""

    agent_id: str = ""
    user_id: str = ""
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH)] = DEFAULT_BATCH


async def list_memory_namespaces(s: Services, c: AdminCall) -> Any:
    return paged(await s.memory.usage(c.tenant, *asked(c)))


async def reembed_memory_namespace(s: Services, c: AdminCall) -> Any:
    body: ReembedNamespace = c.body
    agent_id, user_id = check_id(body.agent_id, "agent_id"), check_id(body.user_id, "user_id")
    who = c.who
    if who.tenant != c.tenant:  # an org-admin's: the embeddings are the tenant's calls (its pins, its bill)
        who = msgspec.structs.replace(who, tenant=c.tenant, team=None)
    caller = Caller(who, "mreembed_" + secrets.token_hex(10))
    try:
        done = await step(s.memory, c.tenant, agent_id, user_id, caller=caller, batch=body.batch_size)
    except SpaceUnavailable as exc:
        raise space_refusal(exc) from None
    except Unchanged as exc:
        raise ApiError(409, f"Nothing to re-embed: {exc}.", code="memory_embedding_model_unchanged") from None
    return done.view()


def _own_tenant(principal: Principal, params: dict[str, str], query: dict[str, str]) -> None:
    """The tenant's admins (org-admins: any tenant's); another tenant's namespaces are not found, not forbidden."""
    if ORG_ADMIN not in principal.roles and principal.tenant != params["tenant"]:
        authorize(principal, WRITE, principal.tenant)  # the role first: a member is told what it lacks
        raise ApiError(404, "No such memory namespace in a tenant of this credential.", code="not_found")
    authorize(principal, WRITE, params["tenant"])


ROUTES = (
    Route(
        "GET",
        T + "/{tenant}/memory/namespaces",
        READ,
        list_memory_namespaces,
        "The tenant's memory namespaces: agent_id, user_id, default TTL, live records, their plaintext bytes, "
        "oldest and newest write (never content); by agent and user, "
        + SAYS
        + " (last_id: a cursor naming the last namespace's agent and user)",
        query=QUERY,
        needs=_MEMORY,
        tenant_must_exist=True,
    ),
    Route(
        "POST",
        T + "/{tenant}/memory/namespaces/reembed",
        WRITE,
        reembed_memory_namespace,
        "Move a memory namespace to the configured embedding model: one batch of records re-embedded per call "
        "(searches keep the old vectors until the last batch switches the namespace at once); call until "
        "`status` is `completed`",
        body=ReembedNamespace,
        event="memory.reembed",
        needs=_MEMORY,
        check=_own_tenant,
        refresh=False,
    ),
)
