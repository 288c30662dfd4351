"""Console session ends: a logout, or an org-admin's cut-off, ends console sessions on every replica.

The console's session is a sealed cookie (api/console/session.py) that carries a random session id and
the time it was issued. Ending one stores a row (`console_session_ends`):

- `session`: one session, by its id (a logout). Kept until that session's own expiry.
- `subject`: every session of a viewer's subject of one issuer (and, with a tenant, of that tenant)
  issued at or before `not_before`; `all`: every session issued at or before `not_before`. Kept until
  `not_before` plus the console's session TTL: every session they end has expired by itself by then.

A subject is named with its issuer (`issuer`): an identity.oidc issuer's exact `iss` for a token's
subject, `api_key` for a managed key (its subject is the key's own id), `static` for the environment's
keys. A row stored before the issuer was recorded has none, and ends that subject of any issuer, as it
did. A cut-off a tenant-admin set (`set_by_role`) never ends the session of a viewer holding a role only
an org-admin grants (org-admin, auditor): a tenant-admin cannot end an org-admin's access.

Every write bumps `state_version`, so each replica's `SnapshotCache` reloads the live rows within
`storage.refresh_s`, and `SessionEndIndex` answers each console page from memory (no read per page).
Rows past their `expires_at` are pruned by the next write, and never loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..schema.principal import ORG_ADMIN, ORG_GRANTED, TENANT_ADMIN
from .base import StoreBase, nonempty, refuse_past, to_utc, utcnow
from .errors import Invalid
from .ids import timed_id
from .records import ConsoleSessionEnd, SessionEndKind
from .row_reads import Page, by_creation, read_page
from .rows import _strict
from .tables import console_session_ends

_MAX = {"subject": 400, "reason": 1000, "session_id": 64, "issuer": 400}
# Cut-offs in force of one tenant at most: every replica holds each (SessionEndIndex) for the console's
# session TTL, and a tenant admin naming a new subject each time grew them all. Logouts (each a real
# session's) and org-wide cut-offs (an org-admin's, no tenant) are not counted.
MAX_CUTOFFS_PER_TENANT = 10_000
# The issuer of a managed API key's subject (its own id), and of the environment's keys (Principal.source).
API_KEY_ISSUER, STATIC_ISSUER = "api_key", "static"
_OIDC = "oidc:"
# How far in the future a cut-off's not_before may be: a client's clock a little ahead of the database's.
_SKEW = timedelta(minutes=5)


def viewer_issuer(source: str, iss_by_name: Mapping[str, str]) -> str | None:
    """The issuer a viewer's subject is of, as session ends name it: a Principal's `source` (`api_key`,
    `static`, `oidc:<identity.oidc name>`) with an OIDC issuer's name turned into its exact `iss` (what a
    token carries; the name is the config's). None: a source no end names."""
    if source in (API_KEY_ISSUER, STATIC_ISSUER):
        return source
    if source.startswith(_OIDC):
        return iss_by_name.get(source[len(_OIDC) :])
    return None


def live_session_ends(now: datetime):
    """The WHERE clause of the rows a console page must still see."""
    return console_session_ends.c.expires_at > now


def session_end(r: Any, fields: tuple[str, ...]) -> ConsoleSessionEnd:
    return _strict(ConsoleSessionEnd, r, fields)


def _detail(r: ConsoleSessionEnd) -> dict[str, Any]:
    # Never the session id: with the sealing key it is no secret, but it names one browser's session.
    return {
        "kind": r.kind,
        "issuer": r.issuer,
        "subject": r.subject,
        "not_before": r.not_before.isoformat() if r.not_before else None,
        "expires_at": r.expires_at.isoformat(),
        "reason": r.reason,
        "set_by_role": r.set_by_role,
    }


class ConsoleSessionsRepo(StoreBase):
    async def end_console_session(
        self,
        session_id: str,
        *,
        expires_at: datetime,
        subject: str,
        tenant_id: str | None,
        actor: str,
        issuer: str | None = None,
    ) -> ConsoleSessionEnd:
        """End one session (a logout), kept until `expires_at` (the session's own expiry). Ending one ended
        already changes nothing and returns the row stored first."""
        nonempty(session_id, "session_id", _MAX["session_id"])
        until = to_utc(expires_at, "expires_at") or utcnow()
        now = utcnow()
        record = ConsoleSessionEnd(
            id=timed_id("cse", now),
            kind="session",
            session_id=session_id,
            tenant_id=tenant_id,
            subject=subject[: _MAX["subject"]],
            not_before=None,
            expires_at=max(until, now + timedelta(seconds=1)),
            reason="logout",
            actor=actor[:200],
            created_at=now,
            issuer=issuer[: _MAX["issuer"]] if issuer is not None else None,
        )
        # Locked by the id on PostgreSQL (SQLite's writes are serial): two logouts of one session at once (two
        # tabs, two replicas) both read no row, and the second insert broke the id's unique constraint.
        async with self._write(lock=f"console_session_end:{session_id}") as conn:
            had = (
                await conn.execute(
                    sa.select(console_session_ends).where(console_session_ends.c.session_id == session_id)
                )
            ).first()
            if had is not None:
                return session_end(had, tuple(map(str, had._fields)))
            await self._insert(conn, record, now, "console_session.logout")
        return record

    async def end_console_sessions(
        self,
        *,
        subject: str | None = None,
        issuer: str | None = None,
        tenant_id: str | None = None,
        not_before: datetime | None = None,
        ttl_s: float,
        reason: str = "",
        actor: str,
        role: str = ORG_ADMIN,
    ) -> ConsoleSessionEnd:
        """End every console session of `subject` of `issuer` (None: of anyone), of `tenant_id` (None: any
        tenant), issued at or before `not_before` (default: now). `ttl_s`: the console's session TTL, how long
        the row is kept after `not_before`. `role`: who sets it (a tenant-admin's never ends a session holding
        a role only an org-admin grants; who may set which is the caller's check). Raises Invalid for bad
        input."""
        kind: SessionEndKind = "all" if subject is None else "subject"
        if subject is not None:
            nonempty(subject, "subject", _MAX["subject"])
            if issuer is None:
                raise Invalid("a subject is named with its issuer", field="issuer")
            nonempty(issuer, "issuer", _MAX["issuer"])
        elif issuer is not None:
            raise Invalid("an issuer names whose subject: give the subject too", field="subject")
        if role not in (ORG_ADMIN, TENANT_ADMIN):
            raise Invalid("role must be org-admin or tenant-admin")
        if not isinstance(reason, str):
            raise Invalid("reason must be a string", field="reason")
        nonempty(reason, "reason", _MAX["reason"], required=False)
        if not (isinstance(ttl_s, (int, float)) and 0 < ttl_s < math.inf):
            raise Invalid("ttl_s must be a positive number of seconds")
        now = utcnow()
        not_before = to_utc(not_before, "not_before") or now
        if not_before > now + _SKEW:  # it would refuse the sessions signed in again until then: no one could undo it
            raise Invalid(
                "not_before is in the future: a cut-off ends the sessions issued up to now (or an earlier time)",
                field="not_before",
            )
        expires_at = not_before + timedelta(seconds=ttl_s)
        if expires_at <= now:
            raise Invalid(
                "not_before is so long ago that every session issued by then has expired already",
                field="not_before",
            )
        record = ConsoleSessionEnd(
            id=timed_id("cse", now),
            kind=kind,
            session_id=None,
            tenant_id=tenant_id,
            subject=subject,
            not_before=not_before,
            expires_at=expires_at,
            reason=reason,
            actor=actor,
            created_at=now,
            issuer=issuer,
            set_by_role=role,
        )
        # One lock per tenant (PostgreSQL; SQLite serializes writes): concurrent cut-offs cannot all count room
        # for one and all insert.
        async with self._write(lock=f"console_session_cutoffs:{tenant_id}" if tenant_id is not None else None) as conn:
            if tenant_id is not None:
                t = console_session_ends.c
                in_force = (t.tenant_id == tenant_id, t.kind != "session", t.expires_at > now)
                await refuse_past(
                    conn,
                    console_session_ends,
                    in_force,
                    MAX_CUTOFFS_PER_TENANT,
                    tenant_id,
                    "session cut-offs in force",
                    "each lasts the console's session TTL after its cut-off",
                )
            await self._insert(conn, record, now, "console_sessions.end")
        return record

    async def _insert(self, conn: Any, record: ConsoleSessionEnd, now: datetime, action: str) -> None:
        # Pruned here, by the next write: a row past its expiry ends no session that has not expired itself.
        await conn.execute(sa.delete(console_session_ends).where(console_session_ends.c.expires_at <= now))
        await conn.execute(
            sa.insert(console_session_ends).values(**{f: getattr(record, f) for f in record.__struct_fields__})
        )
        await self._record(
            conn,
            actor=record.actor,
            tenant_id=record.tenant_id,
            action=action,
            object_type="console_session_end",
            object_id=record.id,
            detail=_detail(record),
            at=now,
        )

    async def page_console_session_ends(
        self, limit: int, after: str | None = None, *, tenant_id: str | None = None, live_only: bool = True
    ) -> Page[ConsoleSessionEnd]:
        """A page of them, oldest first, after the row `after` (its id); with `tenant_id`, only that tenant's."""
        q = sa.select(console_session_ends)
        if tenant_id is not None:
            q = q.where(console_session_ends.c.tenant_id == tenant_id)
        listed = q.where(live_session_ends(utcnow())) if live_only else q
        async with self._read() as conn:
            return await read_page(
                conn,
                listed,
                console_session_ends,
                session_end,
                console_session_ends.c.created_at,
                limit,
                after,
                marks=q,
                place=by_creation,
            )


class _Cut(NamedTuple):
    tenant: str | None  # None: any tenant
    issuer: str | None  # None: any issuer (a row from before issuers were recorded, or kind all)
    not_before: float
    expires: float
    by_tenant_admin: bool  # ends no session holding a role only an org-admin grants


class SessionEndIndex:
    """Live session ends in memory, for every console page: one set lookup by session id, one dictionary
    lookup by subject, and the organisation-wide cut-offs (few: each is an org-admin's act)."""

    __slots__ = ("by_session", "by_subject", "everyone")

    def __init__(self, ends: Iterable[ConsoleSessionEnd] = ()) -> None:
        self.by_session: dict[str, float] = {}
        by_subject: dict[str, list[_Cut]] = {}
        everyone: list[_Cut] = []
        for e in ends:
            expires = e.expires_at.timestamp()
            if e.kind == "session" and e.session_id is not None:
                self.by_session[e.session_id] = expires
            elif e.not_before is not None:
                # Anything but an org-admin's (a value no writer makes) is read as the weaker tenant-admin's.
                cut = _Cut(e.tenant_id, e.issuer, e.not_before.timestamp(), expires, e.set_by_role != ORG_ADMIN)
                if e.kind == "subject" and e.subject is not None:
                    by_subject.setdefault(e.subject, []).append(cut)
                elif e.kind == "all":
                    everyone.append(cut)
        self.by_subject = {k: tuple(v) for k, v in by_subject.items()}
        self.everyone = tuple(everyone)

    def ended(
        self,
        session_id: str,
        subject: str,
        tenant: str,
        issued: float,
        now: float | None = None,
        *,
        issuer: str | None = None,
        roles: frozenset[str] = frozenset(),
    ) -> bool:
        """Whether a stored end covers this session: its id, its viewer's subject, that subject's issuer
        (viewer_issuer), tenant and roles, and when it was issued."""
        now = time.time() if now is None else now
        expires = self.by_session.get(session_id)
        if expires is not None and now < expires:
            return True
        privileged = not ORG_GRANTED.isdisjoint(roles)
        cuts = self.by_subject.get(subject, ()) + self.everyone
        return any(
            (c.tenant is None or c.tenant == tenant)
            and (c.issuer is None or c.issuer == issuer)
            and not (c.by_tenant_admin and privileged)
            and issued <= c.not_before
            and now < c.expires
            for c in cuts
        )


EMPTY_SESSION_ENDS = SessionEndIndex()
