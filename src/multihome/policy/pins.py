"""Stateful-work pins: where a tenant's stateful work may be hosted, and for how long.

A contract may grant one cloud the exclusive right to host a tenant's stateful runtime (an AI lab's
agents on one cloud) while the same models stay available elsewhere. A pin says so for one tenant:
the providers and/or data zones its stateful work may be served from, from `valid_from` until
`valid_until` (open-ended when None), optionally for some kinds of work only (`work`, all by default).

Stateful work is a background response, an agent-run step, a stored Responses turn (one that keeps
state: `store`, `previous_response_id` or `conversation`) and a memory embedding made by a routed
deployment (`WORK_KINDS`; docs/policy.md "Stateful-work pins"). A stateless call never reads a pin.

A deployment is inside a pin when its provider is listed (if the pin lists providers) and its data
zone is listed (if it lists zones; an unknown zone is outside, fail closed). Every live pin of the
tenant that covers the work applies, so adding a pin never widens where work may go. Liveness is
checked against the clock on every call, so an ended pin stops applying without a restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from ..schema import admin_fields as fields
from .model import DeploymentFacts

BACKGROUND, AGENT_STEP, STORED_RESPONSE, MEMORY_EMBEDDING = (
    "background",
    "agent_step",
    "stored_response",
    "memory_embedding",
)
WORK_KINDS = (BACKGROUND, AGENT_STEP, STORED_RESPONSE, MEMORY_EMBEDDING)
STATEFUL_PIN_UNAVAILABLE = "stateful_pin_unavailable"


class StatefulPin(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    id: str
    tenant_id: str
    valid_from: dt.datetime
    valid_until: dt.datetime | None = None
    providers: list[str] | None = None  # exact provider names (config `providers:` keys)
    data_zones: list[str] | None = None  # compared case-insensitively, like egress rules
    work: list[str] | None = None  # None: every kind of stateful work
    note: str | None = None

    def live(self, now: dt.datetime) -> bool:
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)

    def covers(self, work: str) -> bool:
        return self.work is None or work in self.work

    def summary(self) -> str:
        """The pin in words, for reasons a person reads: "pin pin_1 (providers [azure]; until 2027-01-01T00:00:00Z)"."""
        parts = []
        if self.providers is not None:
            parts.append("providers [" + ", ".join(self.providers) + "]")
        if self.data_zones is not None:
            parts.append("data zones [" + ", ".join(self.data_zones) + "]")
        if self.valid_until is not None:
            parts.append("until " + self.valid_until.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return f"pin {self.id} ({'; '.join(parts)})"


@dataclass(frozen=True, slots=True)
class CompiledPin:
    """A pin as the hot path reads it: its names as sets, its summary in words made once."""

    pin: StatefulPin
    providers: frozenset[str] | None
    zones: frozenset[str] | None  # casefolded
    summary: str

    def admits(self, dep: DeploymentFacts) -> bool:
        """Inside the pin: its provider listed (if the pin lists providers) and its zone listed (if it
        lists zones; a deployment without a configured zone is outside, fail closed)."""
        if self.providers is not None and dep.provider not in self.providers:
            return False
        if self.zones is not None and (dep.data_zone is None or dep.data_zone.casefold() not in self.zones):
            return False
        return True


def compile_pin(pin: StatefulPin) -> CompiledPin:
    providers = frozenset(pin.providers) if pin.providers is not None else None
    zones = frozenset(z.casefold() for z in pin.data_zones) if pin.data_zones is not None else None
    return CompiledPin(pin, providers, zones, pin.summary())


def pin_problems(
    pin: StatefulPin, providers: Iterable[str] | None = None, zones: Iterable[str] | None = None
) -> list[str]:
    """Everything wrong with a pin; `providers`/`zones`, when given, are the names the catalog knows
    (an admin pinning to a provider or zone that does not exist made a typo, not a policy)."""
    problems = []
    if pin.providers is None and pin.data_zones is None:
        problems.append("a pin needs providers, data_zones or both (it would pin to nowhere in particular)")
    for name, values, known, casefold in (
        ("providers", pin.providers, providers, False),
        ("data_zones", pin.data_zones, zones, True),
        ("work", pin.work, WORK_KINDS, False),
    ):
        if values is None:
            continue
        if not values:
            problems.append(f"{name}: an empty list matches nothing; omit the field")
            continue
        found = fields.strings(values, name)
        if found is not None:
            problems.append(found.message)
            continue
        if known is not None:
            allowed = {k.casefold() if casefold else k for k in known}
            unknown = [v for v in values if (v.casefold() if casefold else v) not in allowed]
            if unknown:
                listing = ", ".join(sorted(allowed)) or "none"
                problems.append(f"{name}: unknown {', '.join(repr(v[:80]) for v in unknown[:5])} (known: {listing})")
    for when in ("valid_from", "valid_until"):
        value = getattr(pin, when)
        if value is not None:
            found = fields.moment(value, when)
            if found is not None:
                problems.append(found.message)
    if not problems and pin.valid_until is not None and pin.valid_until <= pin.valid_from:
        problems.append(
            f"valid_until {pin.valid_until.isoformat()} is not after valid_from {pin.valid_from.isoformat()}"
        )
    if pin.note is not None:
        found = fields.text(pin.note, "note", max_len=fields.TEXT_MAX, required=False)
        if found is not None:
            problems.append(found.message)
    return problems


class Pinned:
    """What the live pins did to one stateful call: the deployments they removed (with why), and
    whether any deployment of the groups planned stayed inside them."""

    __slots__ = ("work", "pins", "removed", "kept")

    def __init__(self, work: str, pins: Sequence[CompiledPin]) -> None:
        self.work = work
        self.pins = pins
        self.removed: dict[str, str] = {}  # deployment -> why the pin removed it
        self.kept = False  # some deployment policy allowed is inside every pin

    def split(self, facts: Sequence[DeploymentFacts], allowed: frozenset[str]) -> dict[str, str]:
        """Of `allowed` (policy's allow-set for one group), those outside a pin, each with the pin that removed it."""
        out: dict[str, str] = {}
        for dep in facts:
            if dep.name not in allowed:
                continue
            for pin in self.pins:
                if not pin.admits(dep):
                    zone = dep.data_zone or "not configured"
                    out[dep.name] = (
                        f"outside stateful-work {pin.summary} for {self.work}: provider {dep.provider}, data zone {zone}"
                    )
                    break
            else:
                self.kept = True
        self.removed.update(out)
        return out

    def describe(self) -> str:
        return "; ".join(p.summary for p in self.pins)

    def to_dict(self) -> dict[str, object]:
        return {
            "work": self.work,
            "pins": [msgspec.to_builtins(p.pin) for p in self.pins],
            "removed": dict(self.removed),
        }


class PinIndex:
    """A tenant's pins, for the hot path: a tenant without any costs one dict lookup."""

    __slots__ = ("by_tenant",)

    def __init__(self, pins: Iterable[StatefulPin] = (), compiled: Iterable[CompiledPin] = ()) -> None:
        """`compiled`: pins compiled already (api/policy_gate compiles each stored row on its own)."""
        by_tenant: dict[str, list[CompiledPin]] = {}
        for c in sorted([*map(compile_pin, pins), *compiled], key=lambda c: c.pin.id):
            by_tenant.setdefault(c.pin.tenant_id, []).append(c)
        self.by_tenant = {t: tuple(p) for t, p in by_tenant.items()}

    def applying(self, tenant: str, work: str, now: dt.datetime | None = None) -> Pinned | None:
        """The tenant's pins that apply to `work` now, or None when none does."""
        pins = self.by_tenant.get(tenant)
        if pins is None:
            return None
        if now is None:
            now = dt.datetime.now(dt.UTC)
        live = [p for p in pins if p.pin.covers(work) and p.pin.live(now)]
        return Pinned(work, live) if live else None
