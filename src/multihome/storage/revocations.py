"""Token revocations: cut OIDC-authenticated access before a token's `exp`, on every replica.

Two kinds:

- `jti`: one token, named by its issuer and its `jti` claim. The row is kept until the token's
  `exp` when the caller gives it, else for the issuer's maximum token lifetime.
- `subject`: every token of an issuer's subject whose `iat` is at or before `not_before`
  (default: now). Tokens issued later are accepted, so a user who signs in again after the
  IdP has dealt with them gets back in; until then the IdP itself should refuse them.

A row with a tenant refuses only tokens that map to that tenant (claims.py decides a token's
tenant); a row without one refuses them whatever their tenant. Every change bumps
`state_version`, so each replica's `SnapshotCache` reloads the live rows within its interval,
and `RevocationIndex` answers the hot path with two dictionary lookups.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal, overload

import sqlalchemy as sa

from ..schema.errors import echo
from ..schema.principal import ORG_ADMIN, ORG_GRANTED, TENANT_ADMIN
from . import rows
from .base import StoreBase, nonempty, refuse_past, to_utc, utcnow
from .errors import Invalid, NotFound, StorageError
from .ids import timed_id
from .records import RevocationKind, TokenRevocation
from .row_reads import Page, by_creation, either, one, read_one, read_page
from .rows import Unreadable
from .tables import token_revocations

KINDS: tuple[RevocationKind, ...] = ("jti", "subject")
SETTERS = (ORG_ADMIN, TENANT_ADMIN)
DEFAULT_MAX_TOKEN_LIFETIME_S = 24 * 3600.0
# Live revocations of one tenant at most: each is held by every replica (RevocationIndex, reloaded whole with
# the snapshot), and a subject's may never expire, so a tenant admin naming a new jti or subject each time grew
# every replica's memory for good. Org-wide ones (an org-admin's, no tenant) are not counted.
MAX_REVOCATIONS_PER_TENANT = 10_000
# Expired revocations of one tenant kept at most (listed, `live: false`, until deleted): the cap counts live ones
# only, so a tenant admin revoking jti after jti, each expiring a second later, grew the table and its list
# without bound. The tenant's next revocation deletes the oldest past this.
MAX_EXPIRED_PER_TENANT = 10_000
_MAX = {"issuer": 1000, "subject": 400, "jti": 400, "reason": 1000}


class SetByOrgAdmin(StorageError):
    """A tenant-admin asked to lift a revocation an org-admin set (or one whose setter cannot be read)."""


def live_revocations(now: datetime):
    """The WHERE clause of the rows the hot path must still see."""
    return sa.or_(token_revocations.c.expires_at.is_(None), token_revocations.c.expires_at > now)


@overload
def _text(value: Any, field: str, *, required: Literal[True]) -> str: ...
@overload
def _text(value: Any, field: str, *, required: bool) -> str | None: ...
def _text(value: Any, field: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise Invalid(f"{field} is required", field=field)
        return None
    return nonempty(value, field, _MAX[field], required=required)


def _detail(r: TokenRevocation) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "issuer": r.issuer,
        "subject": r.subject,
        "jti": r.jti,
        "not_before": r.not_before.isoformat() if r.not_before else None,
        "expires_at": r.expires_at.isoformat() if r.expires_at else None,
        "reason": r.reason,
    }


def _kind(value: object) -> RevocationKind:
    """`value` as the kind it names, else Invalid."""
    for kind in KINDS:
        if value == kind:
            return kind
    raise Invalid(f"kind must be one of {', '.join(KINDS)}, not '{echo(value)}'", field="kind")


class RevocationsRepo(StoreBase):
    async def create_token_revocation(
        self,
        *,
        kind: str,
        issuer: str,
        subject: str | None = None,
        jti: str | None = None,
        tenant_id: str | None = None,
        not_before: datetime | None = None,
        expires_at: datetime | None = None,
        reason: str = "",
        actor: str,
        max_token_lifetime_s: float = DEFAULT_MAX_TOKEN_LIFETIME_S,
        role: str = ORG_ADMIN,
    ) -> TokenRevocation:
        """Store a revocation. Raises Invalid (with `.field`) for bad input, NotFound for an unknown tenant.

        kind "jti": `jti` required; `expires_at` defaults to now + `max_token_lifetime_s` (pass the
        token's exp to keep the row exactly as long as the token could be used).
        kind "subject": `subject` required; `not_before` defaults to now; `expires_at` optional.
        `role`: the setter's, org-admin or tenant-admin (a tenant-admin's refuses no token of an org-granted role).
        """
        if role not in SETTERS:
            raise Invalid(f"role must be one of {', '.join(SETTERS)}", field="role")
        kind = _kind(kind)
        issuer = _text(issuer, "issuer", required=True)
        subject = _text(subject, "subject", required=kind == "subject")
        jti = _text(jti, "jti", required=kind == "jti")
        if not isinstance(reason, str):
            raise Invalid("reason must be a string", field="reason")
        _text(reason, "reason", required=False)
        if kind == "jti" and subject is not None:
            raise Invalid("subject is for kind subject; a jti revocation names only the token's jti", field="subject")
        if kind == "subject" and jti is not None:
            raise Invalid("jti is for kind jti; a subject revocation names only the subject", field="jti")
        if kind == "jti" and not_before is not None:
            raise Invalid(
                "not_before is for kind subject (a jti revocation refuses that one token)", field="not_before"
            )
        now = utcnow()
        not_before = to_utc(not_before, "not_before")
        expires_at = to_utc(expires_at, "expires_at")
        if kind == "subject" and not_before is None:
            not_before = now
        if expires_at is None and kind == "jti":
            if not (isinstance(max_token_lifetime_s, (int, float)) and 0 < max_token_lifetime_s < math.inf):
                raise Invalid("max_token_lifetime_s must be a positive number of seconds")
            expires_at = now + timedelta(seconds=max_token_lifetime_s)
        if expires_at is not None and expires_at <= now:
            what = "the token has expired already, so it needs no revocation" if kind == "jti" else "it must be later"
            raise Invalid(f"expires_at is in the past: {what}", field="expires_at")
        record = TokenRevocation(
            id=timed_id("rev", now),
            tenant_id=tenant_id,
            kind=kind,
            issuer=issuer,
            subject=subject,
            jti=jti,
            not_before=not_before,
            expires_at=expires_at,
            reason=reason,
            actor=actor,
            created_at=now,
            set_by_role=role,
        )
        # One lock per tenant (PostgreSQL; SQLite serializes writes): concurrent creates cannot all count
        # room for one and all insert.
        async with self._write(lock=f"token_revocations:{tenant_id}" if tenant_id is not None else None) as conn:
            if tenant_id is not None:
                await self._require_tenant(conn, tenant_id)
                live = (token_revocations.c.tenant_id == tenant_id, live_revocations(now))
                await refuse_past(
                    conn,
                    token_revocations,
                    live,
                    MAX_REVOCATIONS_PER_TENANT,
                    tenant_id,
                    "live token revocations",
                    "delete one it no longer needs first (a revocation of a subject refuses every token of it, however many)",
                )
                await _drop_oldest_expired(conn, tenant_id, now)
            await conn.execute(
                sa.insert(token_revocations).values(**{f: getattr(record, f) for f in record.__struct_fields__})
            )
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="token_revocation.create",
                object_type="token_revocation",
                object_id=record.id,
                detail=_detail(record),
                at=now,
            )
        return record

    async def get_token_revocation(self, revocation_id: str, *, tenant_id: str | None = None) -> TokenRevocation:
        """One revocation; with `tenant_id`, only if it is that tenant's (org-wide ones are not)."""
        q = sa.select(token_revocations).where(token_revocations.c.id == revocation_id)
        if tenant_id is not None:
            q = q.where(token_revocations.c.tenant_id == tenant_id)
        async with self._read() as conn:
            return await read_one(
                conn, q, token_revocations, rows.revocation, "token revocation", revocation_id, tenant_id
            )

    async def page_token_revocations(
        self,
        tenant_id: str | None,
        limit: int,
        after: str | None = None,
        *,
        kind: str | None = None,
        issuer: str | None = None,
        subject: str | None = None,
        live_only: bool = False,
    ) -> Page[TokenRevocation]:
        """A page of them, oldest first, after the revocation `after` (its id). `tenant_id=None`: every row,
        org-wide ones included; else that tenant's only. `.unreadable` reports the page's rows that cannot be
        read (their tenant's tokens are refused)."""
        q = sa.select(token_revocations)
        if tenant_id is not None:
            q = q.where(token_revocations.c.tenant_id == tenant_id)
        if kind is not None:
            q = q.where(token_revocations.c.kind == _kind(kind))
        if issuer is not None:
            q = q.where(token_revocations.c.issuer == issuer)
        if subject is not None:
            q = q.where(token_revocations.c.subject == subject)
        listed = q.where(live_revocations(utcnow())) if live_only else q
        async with self._read() as conn:
            return await read_page(
                conn,
                listed,
                token_revocations,
                rows.revocation,
                token_revocations.c.created_at,
                limit,
                after,
                marks=q,
                place=by_creation,
            )

    async def delete_token_revocation(
        self, revocation_id: str, *, tenant_id: str | None = None, actor: str, role: str = ORG_ADMIN
    ) -> TokenRevocation | Unreadable:
        """Lift a revocation (tokens it refused work again once replicas reload); returns what was deleted
        (or what was wrong with a row that could not be read: deleting it mends it).
        With `tenant_id`, only that tenant's row can be deleted (others: NotFound). A tenant-admin (`role`)
        lifts only what a tenant-admin set (else SetByOrgAdmin; a row that cannot be read, by its setter
        read on its own)."""
        where = [token_revocations.c.id == revocation_id]
        if tenant_id is not None:
            where.append(token_revocations.c.tenant_id == tenant_id)
        async with self._write() as conn:
            gone, bad = await one(conn, sa.select(token_revocations).where(*where), token_revocations, rows.revocation)
            if gone is None and bad is None:
                raise NotFound("token revocation", revocation_id, tenant_id)
            if role != ORG_ADMIN:
                setter = (
                    gone.set_by_role
                    if gone is not None
                    else await conn.scalar(sa.select(sa.cast(token_revocations.c.set_by_role, sa.Text)).where(*where))
                )
                if setter != TENANT_ADMIN:
                    raise SetByOrgAdmin(
                        f"token revocation {revocation_id} was set by an org-admin; only an org-admin can lift it"
                    )
            await conn.execute(sa.delete(token_revocations).where(*where))
            await self._record(
                conn,
                actor=actor,
                tenant_id=gone.tenant_id if gone is not None else bad.tenant_id if bad is not None else None,
                action="token_revocation.delete",
                object_type="token_revocation",
                object_id=revocation_id,
                detail=_detail(gone) if gone is not None else {"unreadable": bad.problem if bad else ""},
            )
        return either(gone, bad)


class RevocationIndex:
    """Live revocations in memory, for the OIDC hot path: O(1) by (issuer, jti) and (issuer, subject).

    Built once per snapshot. `match()` costs one dictionary lookup per kind; the rows behind a hit
    (usually one) are then checked for tenant, cut-off and expiry.
    """

    __slots__ = ("by_jti", "by_subject", "_size")

    def __init__(self, revocations: Iterable[TokenRevocation] = ()) -> None:
        # (issuer, jti) -> ((tenant_id, expires_at epoch, record), ...)
        by_jti: dict[tuple[str, str], list[tuple[str | None, float, TokenRevocation]]] = {}
        # (issuer, subject) -> ((tenant_id, not_before epoch, expires_at epoch, record), ...)
        by_subject: dict[tuple[str, str], list[tuple[str | None, float, float, TokenRevocation]]] = {}
        size = 0
        for r in revocations:
            expires = r.expires_at.timestamp() if r.expires_at is not None else math.inf
            if r.kind == "jti" and r.jti is not None:
                by_jti.setdefault((r.issuer, r.jti), []).append((r.tenant_id, expires, r))
            elif r.kind == "subject" and r.subject is not None and r.not_before is not None:
                by_subject.setdefault((r.issuer, r.subject), []).append(
                    (r.tenant_id, r.not_before.timestamp(), expires, r)
                )
            else:
                continue
            size += 1
        self.by_jti = {k: tuple(v) for k, v in by_jti.items()}
        self.by_subject = {k: tuple(v) for k, v in by_subject.items()}
        self._size = size

    def __len__(self) -> int:
        return self._size

    def match(
        self,
        issuer: str,
        jti: str | None,
        subject: str,
        iat: float | None,
        tenant: str,
        now: float | None = None,
        roles: frozenset[str] = frozenset(),
    ) -> TokenRevocation | None:
        """The revocation that refuses this verified token, or None.

        `iat` None (a token without an issue time) counts as issued before any cut-off: a subject
        revocation refuses it (fail closed). `now` is epoch seconds (default: time.time(), read only
        on a hit). `roles`: the token's; a revocation a tenant-admin set refuses none holding a role
        only an org-admin grants (read only on a hit).
        """
        if jti is not None:
            hits = self.by_jti.get((issuer, jti))
            if hits is not None:
                now = time.time() if now is None else now
                for row_tenant, expires, record in hits:
                    if (row_tenant is None or row_tenant == tenant) and now < expires and _binds(record, roles):
                        return record
        hits2 = self.by_subject.get((issuer, subject))
        if hits2 is not None:
            now = time.time() if now is None else now
            for row_tenant, cutoff, expires, record in hits2:
                if (
                    (row_tenant is None or row_tenant == tenant)
                    and now < expires
                    and (iat is None or iat <= cutoff)
                    and _binds(record, roles)
                ):
                    return record
        return None


EMPTY_INDEX = RevocationIndex()


def _binds(record: TokenRevocation, roles: frozenset[str]) -> bool:
    """Whether `record` may refuse a token with `roles`: what a tenant-admin could not grant, it cannot revoke."""
    return record.set_by_role == ORG_ADMIN or ORG_GRANTED.isdisjoint(roles)


async def _drop_oldest_expired(conn: Any, tenant_id: str, now: datetime) -> None:
    """Delete the tenant's expired revocations past the newest MAX_EXPIRED_PER_TENANT (they refuse nothing)."""
    t = token_revocations.c
    expired = sa.and_(t.tenant_id == tenant_id, t.expires_at.is_not(None), t.expires_at <= now)
    older = sa.select(t.id).where(expired).order_by(t.expires_at.desc(), t.id.desc()).offset(MAX_EXPIRED_PER_TENANT)
    await conn.execute(sa.delete(token_revocations).where(t.id.in_(older)))
