"""Who is calling, as every layer after identity sees it. Never holds a secret."""

from __future__ import annotations

import msgspec

# Roles, from most to least powerful. org-admin manages everything; tenant-admin manages one
# tenant; auditor reads one tenant's audit trail; member calls models.
ORG_ADMIN, TENANT_ADMIN, AUDITOR, MEMBER = "org-admin", "tenant-admin", "auditor", "member"
ROLES = (ORG_ADMIN, TENANT_ADMIN, AUDITOR, MEMBER)
# Roles only an org-admin grants (an auditor reads captured content its tenant-admins may not): so only an
# org-admin revokes a key, or an OIDC token, that holds one (api/admin/keys.py, storage/revocations.py).
ORG_GRANTED = frozenset({ORG_ADMIN, AUDITOR})
# What an API key's endpoint scope (`scopes_endpoints`) may name: the model-call endpoints policy checks
# (chat, embeddings, messages, responses), and the stateful routes the gateway checks (api/routes.py
# `Route.scope`): `responses` also covers stored responses and conversations (OpenAI's Responses API),
# `memory` the /v1/memory routes.
ENDPOINT_SCOPES = ("chat", "embeddings", "messages", "responses", "memory")
# Roles that write a tenant's stored state (memory, conversations, stored responses); a caller with none of them
# but `auditor` reads it only (api/routes.py `Route.writes`).
STATE_WRITERS = frozenset({ORG_ADMIN, TENANT_ADMIN, MEMBER})
ALL_TENANTS = "*"  # the tenant of the bootstrap org-admin key, acting across tenants; never a stored tenant


class Principal(msgspec.Struct, frozen=True):
    tenant: str  # tenant id (ALL_TENANTS, "*", only for the bootstrap org-admin acting across tenants)
    subject: str  # key id ("key_...") or the token's `sub`
    source: str  # "api_key" | "oidc:<issuer name>" | "static"
    team: str | None = None
    key_id: str | None = None  # set for API keys: the visible id, never the secret
    roles: frozenset[str] = frozenset({MEMBER})
    # Optional narrowing carried by the credential itself (API-key scopes).
    scopes_models: frozenset[str] | None = None  # model groups this credential may call; None = any
    scopes_endpoints: frozenset[str] | None = None  # e.g. {"chat", "embeddings"}; None = any
    # An auditor's credential with no role that writes: it reads a tenant's stored state, never changes it, and
    # calls no model (api/read_only.py). Set from `roles` when the principal is made (whatever is passed), so
    # the model-call path reads one attribute, never the roles.
    read_only: bool = False

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "read_only", AUDITOR in self.roles and self.roles.isdisjoint(STATE_WRITERS))

    def has_role(self, role: str) -> bool:
        return role in self.roles or ORG_ADMIN in self.roles
