"""The hot-path view: everything identity and policy need, held in memory and refreshed on change.

`SnapshotCache` polls the store's one-row version counter every `interval_s` (one indexed
single-row read) and reloads the snapshot only when it moved, reading only the rows changed since
the snapshot it holds (storage/snapshot_load.py). A change committed on any replica is therefore
served by every replica within `interval_s` + one snapshot load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..outage_log import OutageLog
from .console_sessions import SessionEndIndex
from .keys import KeyIndex
from .records import (
    Budget,
    ConsoleSessionEnd,
    Entitlement,
    KeyRecord,
    Policy,
    StatefulPin,
    Team,
    Tenant,
    TokenRevocation,
)
from .revocations import RevocationIndex
from .rows import Unreadable

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("multihome.storage")


class Snapshot(msgspec.Struct, frozen=True):
    version: int
    tenants: dict[str, Tenant]  # by id
    teams: dict[str, Team]  # by id
    keys: dict[str, KeyRecord]  # non-revoked keys by prefix
    policies: tuple[Policy, ...]
    entitlements: tuple[Entitlement, ...]  # non-revoked grants
    budgets: tuple[Budget, ...] = ()  # set through the admin API (metering adds the config ones)
    revocations: tuple[TokenRevocation, ...] = ()  # token revocations not yet expired when loaded
    stateful_pins: tuple[StatefulPin, ...] = ()  # non-revoked pins, ended or not (policy.pins checks the time)
    unreadable: tuple[Unreadable, ...] = ()  # rows left out because they cannot be read (storage/rows.py)
    # Tenant id -> why its calls are refused (an unreadable row of it); key None: every OIDC token.
    refused: dict[str | None, str] = msgspec.field(default_factory=dict)
    # The tenants (None: every tenant) with a token revocation that cannot be read (rows.token_refusals).
    tokens_refused: frozenset[str | None] = frozenset()
    session_ends: tuple[ConsoleSessionEnd, ...] = ()  # console session ends not yet expired when loaded
    # What it was built from (storage/snapshot_load.py Held), for the next load to read only what changed since.
    held: Any = None

    def key_index(self) -> KeyIndex:
        return KeyIndex(self.keys)

    def revocation_index(self) -> RevocationIndex:
        """The revocations by (issuer, jti) and (issuer, subject), for identity.oidc's hot path."""
        return RevocationIndex(self.revocations)

    def policies_for(self, tenant_id: str) -> list[Policy]:
        return [p for p in self.policies if p.tenant_id == tenant_id]

    def entitlements_for(self, tenant_id: str) -> list[Entitlement]:
        return [e for e in self.entitlements if e.tenant_id == tenant_id]

    def budgets_for(self, tenant_id: str) -> list[Budget]:
        return [b for b in self.budgets if b.tenant_id == tenant_id]


class SnapshotCache:
    """Holds the current Snapshot, its KeyIndex and its RevocationIndex; a background task reloads
    them on change."""

    def __init__(
        self,
        store: Store,
        *,
        interval_s: float = 0.25,
        on_reload: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self._store = store
        self.interval_s = interval_s
        self._listeners: list[Callable[[Snapshot], None]] = [on_reload] if on_reload is not None else []
        self._snapshot: Snapshot | None = None
        self._keys: KeyIndex = KeyIndex({})
        self._revocations: RevocationIndex = RevocationIndex()
        self._session_ends: SessionEndIndex = SessionEndIndex()
        self.known_tenants: Mapping[str, object] = {}  # stored tenants, with those whose row cannot be read
        self._reported: tuple[int, tuple[Unreadable, ...]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0
        self.poll_errors = 0

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise RuntimeError("SnapshotCache.start() has not completed")
        return self._snapshot

    @property
    def keys(self) -> KeyIndex:
        return self._keys

    @property
    def revocations(self) -> RevocationIndex:
        """Live token revocations (empty until start()); OidcVerifier checks every token against it."""
        return self._revocations

    @property
    def session_ends(self) -> SessionEndIndex:
        """Live console session ends (empty until start()); the console checks every page against it."""
        return self._session_ends

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call `listener(snapshot)` (on the event loop, without awaiting) after every reload."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Load the first snapshot (errors propagate: do not serve without one), then poll."""
        await self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="multihome-snapshot-poll")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def refresh(self) -> Snapshot:
        snap = await self._store.snapshot(since=self._snapshot)
        if self._snapshot is None or snap.version >= self._snapshot.version:
            self._snapshot, self._keys, self._revocations = snap, snap.key_index(), snap.revocation_index()
            self._session_ends = SessionEndIndex(snap.session_ends)
            # A tenant whose own row cannot be read is refused by name (tenant_unavailable), not as unknown.
            unread = [t for t in snap.refused if t is not None and t not in snap.tenants]
            self.known_tenants = {**snap.tenants, **dict.fromkeys(unread)} if unread else snap.tenants
            self._report(snap)
            self.reloads += 1
            for listener in self._listeners:
                try:
                    listener(snap)
                except Exception:  # one listener's bug must not stop the others, nor the poll
                    log.exception("snapshot listener %r failed", listener)
        return self.snapshot

    def _report(self, snap: Snapshot) -> None:
        """One ERROR line per reload that leaves rows out (not per call, nor per re-read after a miss)."""
        if not snap.unreadable or self._reported in ((snap.version, snap.unreadable),):
            return
        self._reported = (snap.version, snap.unreadable)
        refused = sorted(t or "every OIDC token" for t in snap.refused)
        log.error(
            "stored rows cannot be read and are left out until fixed (API keys: refused as unknown; other rows: "
            "their tenant refused: %s): %s",
            ", ".join(refused) or "none",
            "; ".join(f"{u.describe()} (tenant {u.tenant_id})" for u in snap.unreadable[:20]),
        )

    async def _poll(self) -> None:
        failing = OutageLog(
            log, "snapshot poll failed (the last snapshot is served)", recovered="snapshot polled again"
        )
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if await self._store.version() != self.snapshot.version:
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database briefly unreachable: keep serving the last snapshot
                self.poll_errors += 1
                failing.failed(exc)
            else:
                failing.ok()
