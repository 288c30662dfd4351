"""The front doors' view of policy: the current engine, rebuilt whenever stored data changes.

Stored policies keep their egress rules under `rules["egress"]` (room for other rule kinds
later). Without storage there are no policies; licensed model groups then refuse everyone.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from ..policy.engine import Decision, PolicyEngine
from ..policy.model import DeploymentFacts, EgressRule, Entitlement, Policy
from ..routing.catalog import Catalog, GroupRuntime
from ..schema.errors import ApiError
from ..schema.principal import Principal

EGRESS = "egress"
log = logging.getLogger("multihome.policy")


def engine_policy(row) -> Policy:
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


def engine_entitlement(row) -> Entitlement:
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


class PolicyGate:
    def __init__(self, catalog: Catalog, snapshots=None) -> None:
        self._snapshots = snapshots  # storage.snapshot.SnapshotCache, or None
        self._licensed = frozenset(n for n, g in catalog.config.model_groups.items() if g.requires_entitlement)
        self._facts = {
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
        self._version: object = None
        self._rows: tuple = ((), ())
        self._building: asyncio.Task | None = None
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

    async def close(self) -> None:
        if self._building is not None:
            self._building.cancel()

    async def _rebuild(self, snap) -> None:
        try:
            if self._version is None or (snap.policies, snap.entitlements) != self._rows:
                self._engine = await asyncio.to_thread(self._build, snap)
                self._rows = (snap.policies, snap.entitlements)
            self._version = snap
        finally:
            self._building = None

    def _build(self, snap) -> PolicyEngine:
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

    def decide(self, principal: Principal, group: str, endpoint: str, on=None) -> Decision:
        """The decision (with its rule trace) for this caller; `on` explains another day (UTC)."""
        return self.engine().decide(principal, group, endpoint, self._facts[group], on)

    def admit(self, principal: Principal, group: GroupRuntime, endpoint: str, tracker=None):
        """Refuse the call (403) or return the planner's per-group policy view for it and its fallbacks.

        The view carries the requested group's decision as `.decision`; a tracker (accounting) is
        told the policy code and the entitlement that licensed or refused the call."""
        decision = self.decide(principal, group.name, endpoint)
        if tracker is not None:
            tracker.policy_code, tracker.entitlement_id = decision.code, decision.entitlement_id
        if not decision.allowed:
            raise ApiError(403, decision.message, type="permission_error", code=decision.code or "policy_denied")
        first = {group.name: decision}

        def view(g: GroupRuntime) -> Decision:
            found = first.get(g.name)
            return found if found is not None else self.decide(principal, g.name, endpoint)

        view.decision = decision
        return view
