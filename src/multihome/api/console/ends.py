"""Ended console sessions: a logout ends the session for good, not only in the browser that logged out.

With storage, a logout stores a row keyed by the session's random id (storage/console_sessions.py), kept
until the session's own expiry; every replica loads the live rows with its snapshot, so a copy of the
cookie is refused by every replica within `storage.refresh_s`, with no database read per page. The
replica that handled the logout refuses it at once: it also remembers the id in memory. An org-admin's
cut-off (every session of a subject, or of everyone, issued before a time) arrives the same way.

Without storage only the memory is kept: the logout holds on the process that served it (until it
restarts), and on any other replica or worker a copy of the cookie works until `console.session_ttl_s`.

Every logout is an `admin_change` (`console_session.logout`) in the audit trail, written by the same writer
as the admin API's changes and on disk before the browser is answered: who logged out (subject, issuer,
tenant), when the session was issued and would have expired, whether it was stored for every replica;
never the cookie or the session's id.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

from ...audit.events import AdminChange
from ...schema.principal import Principal
from ...storage.console_sessions import viewer_issuer
from .session import Session

log = logging.getLogger("multihome.console")

_PRUNE_AT = 10_000  # remembered ids before the expired ones are dropped


LOGOUT = "console_session.logout"  # the audit trail's action (and the change record's) for a logout


class SessionEnds:
    def __init__(self, storage: Any = None, issuers: Mapping[str, str] | None = None, audit_log: Any = None) -> None:
        """`storage`: the gateway's StorageService (its `store` and `snapshots` exist once it started); None
        without storage. `issuers`: identity.oidc's names -> their exact `iss` (read at start-up only), how a
        token viewer's subject is matched against the ends that name its issuer. `audit_log`: the gateway's
        audit.AuditLog, None with the audit trail off."""
        self._storage = storage
        self._issuers: Mapping[str, str] = issuers or {}
        self._audit_log = audit_log
        self._here: dict[str, float] = {}  # session id -> its expiry: ended by a logout on this process

    def issuer(self, viewer: Principal) -> str | None:
        """Whose subject the viewer's is, as session ends name it (storage/console_sessions.py)."""
        return viewer_issuer(viewer.source, self._issuers)

    @property
    def stored(self) -> bool:
        return self._storage is not None

    def ended(self, session: Session, viewer: Principal) -> bool:
        """Whether this session was ended (memory only: the snapshot's index, and this process's logouts)."""
        if session.sid in self._here:
            return True
        snaps = self._storage.snapshots if self._storage is not None else None
        return snaps is not None and snaps.session_ends.ended(
            session.sid,
            viewer.subject,
            viewer.tenant,
            session.issued,
            issuer=self.issuer(viewer),
            roles=viewer.roles,
        )

    async def end(self, session: Session, viewer: Principal) -> bool:
        """End `session` (a logout): at once here, and stored for every replica. False if it could not be
        stored (the database unreachable): then it holds on this process only, which the logout says."""
        now = time.time()
        if len(self._here) >= _PRUNE_AT:
            self._here = {sid: exp for sid, exp in self._here.items() if exp > now}
        self._here[session.sid] = session.expires
        row_id = await self._store(session, viewer)
        await self._audit(session, viewer, row_id)
        return self._storage is None or row_id is not None

    async def _store(self, session: Session, viewer: Principal) -> str | None:
        """The stored row's id; None without storage or if it could not be stored."""
        store = self._storage.store if self._storage is not None else None
        if store is None:
            return None
        try:
            row = await store.end_console_session(
                session.sid,
                expires_at=dt.datetime.fromtimestamp(session.expires, dt.UTC),
                subject=viewer.subject,
                tenant_id=viewer.tenant,
                actor=viewer.subject,
                issuer=self.issuer(viewer),
            )
        except Exception as exc:  # the logout still clears the browser and holds here; say it did not spread
            log.error(
                "console logout of %s could not be stored (%s): other replicas accept a copy", viewer.subject, exc
            )
            return None
        return str(row.id)

    async def _audit(self, session: Session, viewer: Principal, row_id: str | None) -> None:
        """The logout in the audit trail, on disk before the browser is answered (as an admin change is). A
        trail that cannot take it is logged: the person is logged out all the same."""
        if self._audit_log is None:
            return
        event = AdminChange(
            actor=viewer.subject,
            tenant=viewer.tenant,
            action=LOGOUT,
            object_type="console_session",
            object_id=row_id,  # the stored end's id (cse_...), never the session's id: that names one browser's session
            detail={
                "subject": viewer.subject,
                "issuer": self.issuer(viewer),
                "actor_source": viewer.source,
                "issued_at": _iso(session.issued),
                "expires_at": _iso(session.expires),
                # stored for every replica; else it holds only on the process that served it
                "everywhere": row_id is not None,
            },
        )
        try:
            await self._audit_log.append("admin_change", event)
        except Exception as exc:
            log.error("console logout of %s could not be written to the audit trail (%s)", viewer.subject, exc)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
