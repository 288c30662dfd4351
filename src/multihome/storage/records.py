"""What the store hands out: immutable msgspec structs, never SQLAlchemy rows. No secrets here."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

import msgspec

PolicyScope = Literal["tenant", "team", "key"]
BudgetPeriod = Literal["day", "month", "total"]
BudgetMode = Literal["hard", "soft"]
BudgetRole = Literal["org-admin", "tenant-admin"]
RevocationKind = Literal["jti", "subject"]


class Tenant(msgspec.Struct, frozen=True):
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: datetime


class Team(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    name: str
    created_at: datetime


class KeyRecord(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    team_id: str | None
    name: str
    prefix: str  # visible part of the key, `mh_<prefix>_...`
    hash: str  # SHA-256 hex of the whole presented key; the key itself is never stored
    roles: tuple[str, ...]
    scopes_models: tuple[str, ...] | None
    scopes_endpoints: tuple[str, ...] | None
    metadata: dict[str, Any]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class Policy(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    scope: PolicyScope
    scope_id: str
    rules: dict[str, Any]
    description: str
    created_at: datetime
    updated_at: datetime
    # Who set or last changed it: only an org-admin changes or deletes a policy an org-admin set.
    set_by_role: BudgetRole = "org-admin"


class Budget(msgspec.Struct, frozen=True):
    """A spending limit on one counter: (scope, scope_id, period, currency). Metering enforces it."""

    id: str
    tenant_id: str
    scope: PolicyScope
    scope_id: str  # the tenant id, a team id or an API key id of this tenant
    amount: str  # exact decimal text, > 0 ("12.5")
    currency: str
    period: BudgetPeriod  # UTC calendar day / month, or forever
    mode: BudgetMode  # hard: refuse with 429; soft: allow and flag
    created_at: datetime
    updated_at: datetime
    # Who set it: a budget an org-admin set is a cap a tenant-admin may tighten but not lift.
    set_by_role: BudgetRole = "org-admin"


class TokenRevocation(msgspec.Struct, frozen=True):
    """OIDC access cut before the token's exp: one token (kind "jti") or every token of a subject
    issued at or before `not_before` (kind "subject"). Enforced by identity.oidc from the snapshot."""

    id: str
    tenant_id: str | None  # only tokens that map to this tenant; None: every tenant (org-admins only)
    kind: RevocationKind
    issuer: str  # the exact `iss` of the issuer's tokens
    subject: str | None  # kind subject: the issuer's subject claim (claims.subject, default `sub`)
    jti: str | None  # kind jti: the token's `jti` claim
    not_before: datetime | None  # kind subject: tokens with iat <= this are refused
    expires_at: datetime | None  # the row is ignored from then on (None: never)
    reason: str  # free text for people, never secret
    actor: str
    created_at: datetime
    # org-admin or tenant-admin: one a tenant-admin set refuses no token holding a role only an org-admin
    # grants, and only an org-admin lifts one an org-admin set.
    set_by_role: str = "org-admin"

    def live_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


SessionEndKind = Literal["session", "subject", "all"]


class ConsoleSessionEnd(msgspec.Struct, frozen=True):
    """Console sessions ended before their own expiry: one session (kind "session", a logout), or every
    session of a subject (kind "subject") or of anyone (kind "all") issued at or before `not_before`;
    with `tenant_id`, only sessions whose viewer is of that tenant. Enforced by api/console from the snapshot."""

    id: str
    kind: SessionEndKind
    session_id: str | None  # kind session: the random id the sealed cookie carries
    tenant_id: str | None
    subject: str | None  # kind subject: the viewer's subject (a key id, or a token's subject)
    not_before: datetime | None  # kinds subject and all: sessions issued at or before this are ended
    expires_at: datetime  # kept until then: every session it ends has expired by itself by then
    reason: str
    actor: str
    created_at: datetime
    # Whose subject: an identity.oidc issuer's exact `iss`, API_KEY_ISSUER (the subject is a key's id) or
    # STATIC_ISSUER (the environment's keys); None (a row from before it was recorded): of any issuer.
    issuer: str | None = None
    set_by_role: str | None = None  # kinds subject and all: "org-admin" or "tenant-admin"; None: a logout


class Entitlement(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    model_group: str
    starts_on: date  # inclusive
    ends_on: date  # inclusive
    exclusive: bool
    note: str
    created_at: datetime
    revoked_at: datetime | None

    def overlaps(self, starts_on: date, ends_on: date) -> bool:
        return self.starts_on <= ends_on and starts_on <= self.ends_on

    def active_on(self, day: date) -> bool:
        return self.revoked_at is None and self.starts_on <= day <= self.ends_on


class StatefulPin(msgspec.Struct, frozen=True):
    """Where a tenant's stateful work may be hosted (multihome.policy.pins reads it), from valid_from until valid_until."""

    id: str
    tenant_id: str
    providers: list[str] | None
    data_zones: list[str] | None
    work: list[str] | None  # None: every kind of stateful work
    valid_from: datetime
    valid_until: datetime | None  # None: open-ended
    note: str
    created_at: datetime
    revoked_at: datetime | None


class AdminEvent(msgspec.Struct, frozen=True):
    seq: int  # the state_version this change produced; strictly increasing in commit order
    id: str
    at: datetime
    actor: str
    tenant_id: str | None
    action: str  # e.g. "tenant.create", "key.revoke", "entitlement.grant"
    object_type: str
    object_id: str
    detail: dict[str, Any]
