"""Admin API request and response bodies (msgspec): decoded once, unknown fields refused."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from ...policy.model import EgressRule
from ...tools.spec import Approval


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CreateTenant(_Body):
    name: str
    metadata: dict[str, Any] | None = None


class UpdateTenant(_Body):
    name: str | None = None
    metadata: dict[str, Any] | None = None


class CreateTeam(_Body):
    name: str


class CreateKey(_Body):
    name: str
    team_id: str | None = None
    roles: list[str] = msgspec.field(default_factory=lambda: ["member"])
    scopes_models: list[str] | None = None
    scopes_endpoints: list[str] | None = None
    expires_at: dt.datetime | None = None
    expires_in_days: float | None = None
    metadata: dict[str, Any] | None = None


class CreatePolicy(_Body):
    scope: Literal["tenant", "team", "key"]
    rules: list[EgressRule]
    scope_id: str | None = None  # team or key id; the tenant itself for scope "tenant"
    description: str = ""


class UpdatePolicy(_Body):
    rules: list[EgressRule] | None = None
    description: str | None = None


class CreateBudget(_Body):
    """A spending limit on the tenant, one of its teams or one of its API keys."""

    scope: Literal["tenant", "team", "key"]
    amount: str | int | float  # > 0, exact: send a string ("25.00") to avoid float rounding
    scope_id: str | None = None  # team or key id; the tenant itself (or omitted) for scope "tenant"
    currency: str = "USD"
    period: Literal["day", "month", "total"] = "month"  # UTC calendar day / month, or forever
    mode: Literal["hard", "soft"] = "hard"  # hard: refuse calls (429); soft: allow and flag


class UpdateBudget(_Body):
    amount: str | int | float | None = None
    mode: Literal["hard", "soft"] | None = None


class CreateTokenRevocation(_Body):
    """Refuse OIDC tokens before their exp: one token by its jti, or a subject's tokens issued up to a cut-off."""

    kind: Literal["jti", "subject"]
    issuer: str  # the issuer's name in identity.oidc, or its exact `iss`
    jti: str | None = None  # kind jti: the token's `jti` claim
    subject: str | None = None  # kind subject: the issuer's subject claim (claims.subject, default `sub`)
    # Only tokens that map to this tenant. Default: the caller's tenant for a tenant-admin; every
    # tenant (org-wide) for an org-admin.
    tenant_id: str | None = None
    not_before: dt.datetime | int | None = None  # kind subject: refuse tokens with iat <= this (default: now)
    # When the row may be ignored (RFC 3339 or epoch seconds). kind jti: give the token's exp; default:
    # now + the issuer's max_token_lifetime_s. kind subject: optional, default never.
    expires_at: dt.datetime | int | None = None
    reason: str = ""  # free text for people (never a secret: it is listed and recorded)


class EndConsoleSessions(_Body):
    """End console sessions before their own expiry: a subject's, or everyone's, issued up to a cut-off."""

    subject: str | None = None  # a viewer's subject (an API key's id, a token's subject); None: every subject
    # A token subject's issuer: an identity.oidc issuer's name or exact iss. Left out for an API key's id
    # (key_...) or the gateway's own keys (bootstrap-admin, env:...).
    issuer: str | None = None
    tenant_id: str | None = None  # only sessions whose viewer is of this tenant; None: any tenant
    not_before: dt.datetime | int | None = None  # sessions issued at or before this end (default: now)
    reason: str = ""  # free text for people (never a secret: it is listed and recorded)


class GrantEntitlement(_Body):
    model_group: str
    starts_on: dt.date
    ends_on: dt.date
    exclusive: bool = False
    note: str = ""


class CreateStatefulPin(_Body):
    """Where a tenant's stateful work may be hosted (policy/pins.py): providers and/or data zones."""

    providers: list[str] | None = None
    data_zones: list[str] | None = None
    work: list[str] | None = None  # background, agent_step, stored_response, memory_embedding (None: all)
    valid_from: dt.datetime | None = None  # default: now
    valid_until: dt.datetime | None = None  # default: until revoked
    note: str = ""


class ExplainPolicy(_Body):
    """Whose call to explain: a key of the tenant, or a described caller."""

    tenant_id: str
    model: str
    endpoint: Literal["chat", "embeddings", "messages", "responses"] = "chat"
    key_id: str | None = None
    team_id: str | None = None
    roles: list[str] | None = None
    on: dt.date | None = None  # explain as of this day (default: today, UTC)


class KeyView(msgspec.Struct):
    """A key as the admin API shows it: never the hash, never the secret (except `key` once, on create)."""

    id: str
    tenant_id: str
    team_id: str | None
    name: str
    prefix: str
    roles: tuple[str, ...]
    scopes_models: tuple[str, ...] | None
    scopes_endpoints: tuple[str, ...] | None
    metadata: dict[str, Any]
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime
    object: str = "api_key"
    key: str | None = None


def key_view(record: Any, secret: str | None = None) -> KeyView:
    return KeyView(
        id=record.id,
        tenant_id=record.tenant_id,
        team_id=record.team_id,
        name=record.name,
        prefix=record.prefix,
        roles=record.roles,
        scopes_models=record.scopes_models,
        scopes_endpoints=record.scopes_endpoints,
        metadata=record.metadata,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        created_at=record.created_at,
        key=secret,
    )


class SetProviderCredential(_Body):
    """A provider's API key, sealed before it is stored; never shown again (only its last 4 characters)."""

    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]


class ProviderCredentialView(msgspec.Struct):
    """Whether a provider's stored API key is set, and when: never the key."""

    id: str  # the provider's name in the config
    api_key_from: str  # "store" (set here) or "env" (the config's auth; nothing here applies)
    set: bool
    object: str = "provider_credential"
    fingerprint: str | None = None  # the key's last 4 characters (none for a key shorter than 16)
    version: int = 0
    updated_at: dt.datetime | None = None
    updated_by: str | None = None


class CreateMcpServer(_Body):
    """An MCP server this tenant's requests may reach; header values are sealed and never shown again."""

    name: str  # 1-40 of a-z A-Z 0-9 _ -; what a request's server_label names it by
    url: str  # http(s), no userinfo
    description: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    allowed_tools: list[str] | None = None  # null: every tool the server lists
    require_approval: Approval = "always"
    headers: dict[str, str] = msgspec.field(default_factory=dict)  # e.g. {"Authorization": "Bearer …"}


class UpdateMcpServer(_Body):
    """Only what is given changes; `headers` replaces the whole set (`{}` removes them all)."""

    url: str | msgspec.UnsetType = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=1000)] | msgspec.UnsetType = msgspec.UNSET
    allowed_tools: list[str] | None | msgspec.UnsetType = msgspec.UNSET
    require_approval: Approval | msgspec.UnsetType = msgspec.UNSET
    headers: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
