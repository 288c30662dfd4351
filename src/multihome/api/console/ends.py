"""Ended console sessions: a logout ends the session for good, not only in the browser that logged out.

With storage, a logout stores a row keyed by the session's random id (storage/console_sessions.py), kept
until the session's own expiry; every replica loads the live rows with its snapshot, so a copy of the
cookie is refused by every replica within `storage.refresh_s`, with no database read per page. The
replica that handled the logout refuses it at once: it also remembers the id in memory. An org-admin's
cut-off (every session of a subject, or of everyone, issued before a time) arrives the same way.

Without storage only the memory is kept: the logout holds on the process that served it (until it
restarts), and on any other replica or worker a copy of the cookie works until `console.session_ttl_s`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from ...schema.principal import Principal
from .session import Session

log = logging.getLogger("multihome.console")

_PRUNE_AT = 10_000  # remembered ids before the expired ones are dropped


class SessionEnds:
    def __init__(self, storage: Any = None) -> None:
        """`storage`: the gateway's StorageService (its `store` and `snapshots` exist once it started); None
        without storage."""
        self._storage = storage
        self._here: dict[str, float] = {}  # session id -> its expiry: ended by a logout on this process

    @property
    def stored(self) -> bool:
        return self._storage is not None

    def ended(self, session: Session, viewer: Principal) -> bool:
        """Whether this session was ended (memory only: the snapshot's index, and this process's logouts)."""
        if session.sid in self._here:
            return True
        snaps = self._storage.snapshots if self._storage is not None else None
        return snaps is not None and snaps.session_ends.ended(
            session.sid, viewer.subject, viewer.tenant, session.issued
        )

    async def end(self, session: Session, viewer: Principal) -> bool:
        """End `session` (a logout): at once here, and stored for every replica. False if it could not be
        stored (the database unreachable): then it holds on this process only, which the logout says."""
        now = time.time()
        if len(self._here) >= _PRUNE_AT:
            self._here = {sid: exp for sid, exp in self._here.items() if exp > now}
        self._here[session.sid] = session.expires
        store = self._storage.store if self._storage is not None else None
        if store is None:
            return self._storage is None
        try:
            await store.end_console_session(
                session.sid,
                expires_at=dt.datetime.fromtimestamp(session.expires, dt.UTC),
                subject=viewer.subject,
                tenant_id=viewer.tenant,
                actor=viewer.subject,
            )
        except Exception as exc:  # the logout still clears the browser and holds here; say it did not spread
            log.error(
                "console logout of %s could not be stored (%s): other replicas accept a copy", viewer.subject, exc
            )
            return False
        return True
