"""The front doors' view of policy: the current engine, rebuilt whenever stored data changes.

Stored policies keep their egress rules under `rules["egress"]` (room for other rule kinds
later). Without storage there are no policies; licensed model groups then refuse everyone.

Stateful work (a call whose `Call.work` names its kind: policy/pins.py) is also held to the tenant's
live stateful-work pins: `admit` narrows each group's allow-set to the deployments inside them, and
`Pinned` remembers what it removed, for route explain and for the error that names the pin. A
stateless call, or a tenant without pins, costs nothing more (one dict lookup for stateful work).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Protocol

import msgspec

from ..aio import cancel_and_wait
from ..policy.engine import POLICY_UNAVAILABLE, Decision, PolicyEngine
from ..policy.model import DeploymentFacts, EgressRule, Entitlement, Policy
from ..policy.pins import STATEFUL_PIN_UNAVAILABLE, CompiledPin, PinIndex, Pinned, StatefulPin, compile_pin
from ..routing.catalog import Catalog, GroupRuntime
from ..schema.errors import ApiError, ErrorBody
from ..schema.principal import Principal

if TYPE_CHECKING:
    from ..accounting.tracker import CallTracker
    from ..storage import records
    from ..storage.snapshot import Snapshot

EGRESS = "egress"
log = logging.getLogger("multihome.policy")
_JSON_KINDS = {
    type(None): "null",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def engine_policy(row: records.Policy) -> Policy:
    """A stored policy row (storage.records.Policy) as the engine reads it; raises if it cannot be read."""
    if not isinstance(row.rules, dict):  # a hand-edited row, or one another version wrote
        raise ValueError(f"rules is {_JSON_KINDS.get(type(row.rules), 'not JSON')}, not an object")
    rules = msgspec.convert(row.rules.get(EGRESS, []), list[EgressRule])
    return Policy(
        id=row.id,
        tenant_id=row.tenant_id,
        scope=row.scope,
        scope_id=row.scope_id,
        rules=rules,
        description=row.description or None,
    )


def engine_pin(row: records.StatefulPin) -> StatefulPin:
    """A stored pin row as policy.pins reads it; raises if its lists are not lists of strings."""
    for name in ("providers", "data_zones", "work"):
        values = getattr(row, name)
        if values is not None and not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise ValueError(f"{name} is not a list of strings")
    return StatefulPin(
        id=row.id,
        tenant_id=row.tenant_id,
        providers=row.providers,
        data_zones=row.data_zones,
        work=row.work,
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        note=row.note or None,
    )


def _unreadable_grants(snap: Snapshot) -> tuple[tuple[str | None, str], ...]:
    """(tenant, model group pattern) of each grant row storage could not read at all and that may be
    exclusive (storage/rows.py)."""
    return tuple((u.tenant_id, u.exclusive_group) for u in snap.unreadable if u.exclusive_group is not None)


def _inputs(snap: Snapshot) -> tuple[object, ...]:
    """What the engine is built from."""
    return snap.policies, snap.entitlements, _unreadable_grants(snap)


def _problem(exc: Exception) -> str:
    """An exception reading a stored row, in one short line (for the tenant's refusal and the log)."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


class PinnedView(msgspec.Struct, frozen=True):
    """A group's decision narrowed by stateful-work pins (what routing.planner.PolicyView reads)."""

    deployments: frozenset[str]
    denied: dict[str, str]


class Admitted(msgspec.Struct, eq=False):
    """The planner's per-group policy view of an admitted call (routing.planner.RequestShape.policy):
    the requested group's decision, made already, and a fresh one for each fallback group asked about;
    for stateful work under a pin, each narrowed to the deployments inside it (`pinned` says what went).
    A Struct, made positionally by `PolicyGate.admit` (in C: no __init__ frame per call)."""

    _gate: PolicyGate
    _principal: Principal
    _group: str
    _endpoint: str
    # The requested group's view (the pipeline admits limits against its deployments): `narrowed` when pinned.
    decision: Decision | PinnedView
    pinned: Pinned | None = None

    def __call__(self, group: GroupRuntime) -> Decision | PinnedView:
        if group.name == self._group:
            return self.decision
        decision = self._gate.decide(self._principal, group.name, self._endpoint)
        return decision if self.pinned is None else narrowed(self._gate, self.pinned, group.name, decision)


def narrowed(gate: PolicyGate, pinned: Pinned, group: str, decision: Decision) -> PinnedView:
    """A group's decision narrowed to the deployments inside the pins."""
    removed = pinned.split(gate.facts(group), decision.deployments)
    return PinnedView(decision.deployments - removed.keys(), {**decision.denied, **removed})


def pin_refusal(err: ApiError, pinned: Pinned, model: str) -> ApiError:
    """`err` (routing found no deployment to serve a stateful call) retold so that it names the pins
    that kept the call from failing over: the same error object (its attempts and headers stay), with
    code `stateful_pin_unavailable`. No deployment inside the pins at all: a 403, as for a policy denial;
    deployments inside them that are down or declined: the routing error's status (503, 429, 504)."""
    where = pinned.describe()
    if not pinned.kept:
        err.status = 403
        message = (
            f"This tenant's stateful work ({pinned.work}) is pinned by {where}, and model '{model}' has no "
            f"deployment inside the pin that policy allows ({err.body.message}). Ask a tenant admin to change "
            "the pin, use a model with a deployment inside it, or send the call as stateless work."
        )
        err.body = ErrorBody(message, "permission_error", err.body.param, STATEFUL_PIN_UNAVAILABLE)
        return err
    message = (
        f"This tenant's stateful work ({pinned.work}) is pinned by {where}, so it cannot fail over outside "
        f"the pin, and no deployment inside it could serve the call: {err.body.message}"
    )
    err.body = ErrorBody(message, err.body.type, err.body.param, STATEFUL_PIN_UNAVAILABLE)
    return err


class PolicyGate:
    def __init__(self, catalog: Catalog, snapshots: Snapshots | None = None) -> None:
        self._snapshots = snapshots
        self._licensed, self._facts = _view(catalog)
        self._version: object = None
        self._rows: tuple[object, ...] = ((), (), ())  # _inputs() of the snapshot the engine was built from
        self._building: asyncio.Task[None] | None = None
        self._engine = PolicyEngine.from_rows([], [], self._licensed)
        # The newest snapshot, as the snapshot cache tells it on each reload (start() subscribes, when it
        # can): `admit` reads this attribute, not the cache's (through app.py's _Lazy: two frames a call).
        self._follows = False
        self._newest: object = None
        self._pins = PinIndex()
        self._pin_rows: tuple[records.StatefulPin, ...] = ()
        # Tenant -> why its stored pins cannot be read: its stateful work is refused (not served unpinned).
        self._pins_unreadable: dict[str, str] = {}
        self.places = _places(catalog)  # (providers, data zones) the catalog knows: what a pin may name

    def engine(self) -> PolicyEngine:
        """The engine for the newest stored data. Building one takes milliseconds, so it happens in a
        worker thread while the previous engine keeps answering; start() builds the first one."""
        if self._snapshots is not None:
            snap = self._snapshots.snapshot
            if snap is not self._version and self._building is None:
                self._building = asyncio.get_running_loop().create_task(self._rebuild(snap))
        return self._engine

    async def start(self) -> None:
        snapshots = self._snapshots
        if snapshots is not None:
            await self._rebuild(snapshots.snapshot)
            subscribe = getattr(snapshots, "subscribe", None)
            if subscribe is not None and not self._follows:
                subscribe(self._reloaded)
                self._newest, self._follows = snapshots.snapshot, True

    def _reloaded(self, snap: Snapshot) -> None:
        self._newest = snap

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
        self.places = _places(catalog)
        if licensed != self._licensed:
            self._licensed = licensed
            if self._snapshots is None:
                self._engine = PolicyEngine.from_rows([], [], licensed)
            else:
                snap = self._snapshots.snapshot
                self._engine = self._build(snap)
                self._rows, self._version = _inputs(snap), snap
                self._take_pins(snap)

    def _take_pins(self, snap: Snapshot) -> None:
        if snap.stateful_pins != self._pin_rows:  # a handful of rows: indexed here, in microseconds
            pins: list[CompiledPin] = []
            unreadable: dict[str, str] = {}
            for row in snap.stateful_pins:
                try:
                    pins.append(compile_pin(engine_pin(row)))
                except Exception as exc:  # any error reading one row: fail closed for its tenant only
                    unreadable.setdefault(row.tenant_id, f"pin {row.id}: {_problem(exc)}")
            for tenant, why in unreadable.items():
                log.error(
                    "stored stateful-work pin of tenant %s cannot be read, refusing its stateful work until an "
                    "org admin revokes or replaces it: %s",
                    tenant,
                    why,
                )
            self._pins = PinIndex(compiled=[p for p in pins if p.pin.tenant_id not in unreadable])
            self._pins_unreadable = unreadable
            self._pin_rows = snap.stateful_pins

    async def close(self) -> None:
        await cancel_and_wait(self._building)

    async def _rebuild(self, snap: Snapshot) -> None:
        try:
            try:
                if self._version is None or _inputs(snap) != self._rows:
                    self._engine = await asyncio.to_thread(self._build, snap)
                    self._rows = _inputs(snap)
                self._take_pins(snap)
            except Exception as exc:  # _build and _take_pins catch their own: a bug must not keep old decisions
                log.exception("policy rebuild failed, refusing every call until the stored data changes")
                self._engine = PolicyEngine.closed(f"policy could not be built ({_problem(exc)})")
                self._rows = _inputs(snap)
            # Applied, even when it failed: the next change of stored data tries again, not the next call.
            self._version = snap
        finally:
            self._building = None

    def _build(self, snap: Snapshot) -> PolicyEngine:
        """The engine for `snap`. A row that cannot be read refuses its own tenant's calls only (the engine
        quarantines the tenant, as it does a row with problems); skipping it could drop a deny."""
        try:
            unreadable: dict[str, list[str]] = {}
            policies = []
            for row in snap.policies:
                try:
                    policies.append(engine_policy(row))
                except Exception as exc:  # any error reading one row: its tenant only
                    unreadable.setdefault(row.tenant_id, []).append(f"policy {row.id}: {_problem(exc)}")
            entitlements = []
            grants = _unreadable_grants(snap)
            for ent in snap.entitlements:
                try:
                    entitlements.append(engine_entitlement(ent))
                except Exception as exc:
                    unreadable.setdefault(ent.tenant_id, []).append(f"entitlement {ent.id}: {_problem(exc)}")
                    if ent.exclusive is not False:  # left out, it would open its group to every tenant
                        grants += ((ent.tenant_id, ent.model_group if isinstance(ent.model_group, str) else "*"),)
            engine = PolicyEngine.from_rows(
                policies,
                entitlements,
                self._licensed,
                unreadable=unreadable,
                unreadable_grants=grants,
                previous=self._engine,
            )
        except Exception as exc:  # not one row's fault: refuse every call rather than keep stale decisions
            log.exception("stored policy data could not be built, refusing every call until it changes")
            return PolicyEngine.closed(f"stored policy data could not be built ({_problem(exc)})")
        for tenant, problems in engine.snapshot.quarantined.items():  # once per build, never per call
            log.error(
                "stored policy data of tenant %s is invalid, refusing its calls until a tenant admin fixes it: %s",
                tenant,
                "; ".join(problems[:5]),
            )
        return engine

    def decide(self, principal: Principal, group: str, endpoint: str, on: dt.date | None = None) -> Decision:
        """The decision (with its rule trace) for this caller; `on` explains another day (UTC)."""
        return self.engine().decide(principal, group, endpoint, self._facts[group], on)

    def facts(self, group: str) -> tuple[DeploymentFacts, ...]:
        return self._facts.get(group, ())

    def admit(
        self,
        principal: Principal,
        group: GroupRuntime,
        endpoint: str,
        tracker: CallTracker | None = None,
        work: str | None = None,
    ) -> Admitted:
        """Refuse the call (403) or return the planner's per-group policy view for it and its fallbacks;
        `work` names the kind of stateful work a call is (None: stateless), which the tenant's pins narrow.

        A tracker (accounting) is told the policy code and the entitlement that licensed or refused the call."""
        name = group.name
        # self.decide, and self.engine() written out (each call enters this once, cache-cold).
        engine = self._engine
        snapshots = self._snapshots
        if snapshots is not None:
            snap = self._newest if self._follows else snapshots.snapshot
            if snap is not self._version and self._building is None:
                engine = self.engine()
        decision = engine.decide(principal, name, endpoint, self._facts[name])
        if tracker is not None:
            tracker.policy_code, tracker.entitlement_id = decision.code, decision.entitlement_id
        if not decision.allowed:
            raise ApiError(403, decision.message, type="permission_error", code=decision.code or "policy_denied")
        if work is None:
            return Admitted(self, principal, name, endpoint, decision)
        if self._pins_unreadable and principal.tenant in self._pins_unreadable:
            raise ApiError(
                403,
                f"This tenant's stateful-work pins cannot be read ({self._pins_unreadable[principal.tenant]}), so its "
                f"stateful work ({work}) is refused until an org admin revokes or replaces the pin; stateless calls "
                "are not affected.",
                type="permission_error",
                code=POLICY_UNAVAILABLE,
            )
        pinned = self._pins.applying(principal.tenant, work)
        if pinned is None:
            return Admitted(self, principal, name, endpoint, decision)
        return Admitted(self, principal, name, endpoint, narrowed(self, pinned, name, decision), pinned)


def _places(catalog: Catalog) -> tuple[frozenset[str], frozenset[str]]:
    """The provider names and the data zones (of providers and deployments) the catalog knows."""
    zones = {p.data_zone for p in catalog.config.providers.values() if p.data_zone}
    zones |= {d.data_zone for d in catalog.deployments.values() if d.data_zone}
    return frozenset(catalog.config.providers), frozenset(zones)


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
