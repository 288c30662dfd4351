"""The front doors' view of policy: the current engine, rebuilt whenever stored data changes.

Stored policies keep their egress rules under `rules["egress"]` (room for other rule kinds
later). Without storage there are no policies; licensed model groups then refuse everyone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Protocol

import msgspec

from ..policy.engine import Decision, PolicyEngine
from ..policy.model import DeploymentFacts, EgressRule, Entitlement, Policy
from ..routing.catalog import Catalog, GroupRuntime
from ..schema.errors import ApiError
from ..schema.principal import Principal

if TYPE_CHECKING:
    from ..accounting.tracker import CallTracker
    from ..storage import records
    from ..storage.snapshot import Snapshot

EGRESS = "egress"
log = logging.getLogger("multihome.policy")


def engine_policy(row: records.Policy) -> Policy:
    """A stored policy row (storage.records.Policy) as the engine reads it."""
    rules = msgspec.convert(row.rules.get(EGRESS, []), list[EgressRule])
    return Policy(
        id=row.id,
        tenant_id=row.tenant_id,
        scope=row.scope,
        scope_id=row.scope_id,
        rules=rules,
        description=row.description or None,
    )


def engine_entitlement(row: records.Entitlement) -> Entitlement:
    return Entitlement(
        id=row.id,
        tenant_id=row.tenant_id,
        model_group=row.model_group,
        starts_on=row.starts_on,
        ends_on=row.ends_on,
        exclusive=row.exclusive,
        note=row.note or None,
        revoked=row.revoked_at is not None,
    )


class Snapshots(Protocol):
    """Where stored policies and entitlements come from (storage.snapshot.SnapshotCache)."""

    @property
    def snapshot(self) -> Snapshot: ...


class Admitted:
    """The planner's per-group policy view of an admitted call (routing.planner.RequestShape.policy):
    the requested group's decision, made already, and a fresh one for each fallback group asked about."""

    __slots__ = ("decision", "_gate", "_principal", "_group", "_endpoint")

    def __init__(self, gate: PolicyGate, principal: Principal, group: str, endpoint: str, decision: Decision) -> None:
        self.decision = decision  # the requested group's (the pipeline admits limits against its deployments)
        self._gate, self._principal, self._group, self._endpoint = gate, principal, group, endpoint

    def __call__(self, group: GroupRuntime) -> Decision:
        if group.name == self._group:
            return self.decision
        return self._gate.decide(self._principal, group.name, self._endpoint)


class PolicyGate:
    def __init__(self, catalog: Catalog, snapshots: Snapshots | None = None) -> None:
        self._snapshots = snapshots
        self._licensed, self._facts = _view(catalog)
        self._version: object = None
        self._rows: tuple[tuple[records.Policy, ...], tuple[records.Entitlement, ...]] = ((), ())
        self._building: asyncio.Task[None] | None = None
        self._engine = PolicyEngine.from_rows([], [], self._licensed)

    def engine(self) -> PolicyEngine:
        """The engine for the newest stored data. Building one takes milliseconds, so it happens in a
        worker thread while the previous engine keeps answering; start() builds the first one."""
        if self._snapshots is not None:
            snap = self._snapshots.snapshot
            if snap is not self._version and self._building is None:
                self._building = asyncio.get_running_loop().create_task(self._rebuild(snap))
        return self._engine

    async def start(self) -> None:
        if self._snapshots is not None:
            await self._rebuild(self._snapshots.snapshot)

    async def refresh(self) -> None:
        """Apply the newest snapshot now (after a change made through this replica)."""
        if self._snapshots is not None:
            if self._building is not None:
                await asyncio.shield(self._building)
            await self._rebuild(self._snapshots.snapshot)

    def reconfigure(self, catalog: Catalog) -> None:
        """After a config reload swapped the catalog's groups, in the same step (no await between): their
        egress facts, and the engine again if which groups need an entitlement changed (built here, in
        milliseconds, so no call is decided with the old set)."""
        licensed, self._facts = _view(catalog)
        if licensed != self._licensed:
            self._licensed = licensed
            if self._snapshots is None:
                self._engine = PolicyEngine.from_rows([], [], licensed)
            else:
                snap = self._snapshots.snapshot
                self._engine = self._build(snap)
                self._rows, self._version = (snap.policies, snap.entitlements), snap

    async def close(self) -> None:
        if self._building is not None:
            self._building.cancel()

    async def _rebuild(self, snap: Snapshot) -> None:
        try:
            if self._version is None or (snap.policies, snap.entitlements) != self._rows:
                self._engine = await asyncio.to_thread(self._build, snap)
                self._rows = (snap.policies, snap.entitlements)
            self._version = snap
        finally:
            self._building = None

    def _build(self, snap: Snapshot) -> PolicyEngine:
        try:
            return PolicyEngine.from_rows(
                [engine_policy(p) for p in snap.policies],
                [engine_entitlement(e) for e in snap.entitlements],
                self._licensed,
            )
        except (msgspec.ValidationError, KeyError, TypeError) as exc:
            # Unreadable policy data must never mean "no policy": refuse until it is fixed.
            log.error("stored policy data is invalid, refusing calls until fixed: %s", exc)
            return PolicyEngine.closed(f"stored policy data is invalid ({exc})")

    def decide(self, principal: Principal, group: str, endpoint: str, on: dt.date | None = None) -> Decision:
        """The decision (with its rule trace) for this caller; `on` explains another day (UTC)."""
        return self.engine().decide(principal, group, endpoint, self._facts[group], on)

    def admit(
        self, principal: Principal, group: GroupRuntime, endpoint: str, tracker: CallTracker | None = None
    ) -> Admitted:
        """Refuse the call (403) or return the planner's per-group policy view for it and its fallbacks.

        A tracker (accounting) is told the policy code and the entitlement that licensed or refused the call."""
        decision = self.decide(principal, group.name, endpoint)
        if tracker is not None:
            tracker.policy_code, tracker.entitlement_id = decision.code, decision.entitlement_id
        if not decision.allowed:
            raise ApiError(403, decision.message, type="permission_error", code=decision.code or "policy_denied")
        return Admitted(self, principal, group.name, endpoint, decision)


def _view(catalog: Catalog) -> tuple[frozenset[str], dict[str, tuple[DeploymentFacts, ...]]]:
    """What policy reads of the catalog: the groups that need an entitlement, and each group's deployments' facts."""
    licensed = frozenset(n for n, g in catalog.config.model_groups.items() if g.requires_entitlement)
    facts = {
        name: tuple(
            DeploymentFacts(
                name=d.name,
                provider=d.provider,
                provider_kind=catalog.config.providers[d.provider].kind,
                region=d.region,
                data_zone=d.data_zone,
            )
            for d in group.deployments
        )
        for name, group in catalog.groups.items()
    }
    return licensed, facts
