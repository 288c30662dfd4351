"""Time-bound model entitlements: is a tenant licensed today, and may a new grant be issued."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec

from .model import Entitlement, globs_overlap

ENTITLEMENT_REQUIRED = "entitlement_required"
ENTITLEMENT_EXPIRED = "entitlement_expired"
ENTITLEMENT_NOT_STARTED = "entitlement_not_started"
ENTITLEMENT_REVOKED = "entitlement_revoked"
EXCLUSIVE_TO_OTHER_TENANT = "exclusive_to_other_tenant"


@dataclass(frozen=True, slots=True)
class EntitlementCheck:
    ok: bool
    code: str | None = None
    message: str = ""
    entitlement_id: str | None = None  # the grant that licenses the call, or the one the refusal names


def check_entitlement(
    tenant: str, model_group: str, today: dt.date, own: list[Entitlement], licensed: bool
) -> EntitlementCheck:
    """`own` are the tenant's entitlements. An unlicensed group needs none."""
    if not licensed:
        return EntitlementCheck(True)
    covering = [e for e in own if e.tenant_id == tenant and e.covers(model_group)]
    live = [e for e in covering if not e.revoked]
    active = [e for e in live if e.in_term(today)]
    if active:
        best = max(active, key=lambda e: (e.ends_on, e.id))  # the grant that lasts longest
        return EntitlementCheck(True, entitlement_id=best.id)
    how = "Ask an organisation admin to grant or extend an entitlement for it."
    future = [e for e in live if e.starts_on > today]
    if future:
        e = min(future, key=lambda e: (e.starts_on, e.id))
        return EntitlementCheck(
            False,
            ENTITLEMENT_NOT_STARTED,
            f"Model group '{model_group}' requires an entitlement: {e.id} for {e.model_group} starts {e.starts_on}. {how}",
            e.id,
        )
    past = [e for e in live if e.ends_on < today]
    if past:
        e = max(past, key=lambda e: (e.ends_on, e.id))
        return EntitlementCheck(
            False,
            ENTITLEMENT_EXPIRED,
            f"Model group '{model_group}' requires an entitlement: {e.id} for {e.model_group} ended {e.ends_on}. {how}",
            e.id,
        )
    if covering:
        e = max(covering, key=lambda e: (e.ends_on, e.id))
        return EntitlementCheck(
            False,
            ENTITLEMENT_REVOKED,
            f"Model group '{model_group}' requires an entitlement: {e.id} for {e.model_group} was revoked. {how}",
            e.id,
        )
    return EntitlementCheck(
        False,
        ENTITLEMENT_REQUIRED,
        f"Model group '{model_group}' requires an entitlement: no entitlement for model group {model_group}. {how}",
    )


def check_exclusive(tenant: str, model_group: str, today: dt.date, exclusive: list[Entitlement]) -> EntitlementCheck:
    """Refuse a call to a group that another tenant holds exclusively today, whatever grants this tenant holds.

    The message does not name the other tenant; `entitlement_id` names the grant for logs, not for the caller.
    """
    for e in exclusive:
        if e.exclusive and not e.revoked and e.tenant_id != tenant and e.in_term(today) and e.covers(model_group):
            return EntitlementCheck(
                False,
                EXCLUSIVE_TO_OTHER_TENANT,
                f"Model group '{model_group}' is licensed exclusively to another tenant through {e.ends_on}. "
                "Ask an organisation admin which model group to use instead.",
                e.id,
            )
    return EntitlementCheck(True)


class GrantConflict(msgspec.Struct, frozen=True):
    new_id: str
    existing_id: str
    existing_tenant_id: str
    overlap_from: dt.date
    overlap_to: dt.date
    message: str


def check_grant(new: Entitlement, existing: list[Entitlement]) -> GrantConflict | None:
    """The first existing grant that `new` would collide with on exclusivity, or None.

    Two grants collide when they belong to different tenants, neither is revoked, their model
    groups can name the same group (exact or family glob), their terms share a day, and at least
    one is exclusive. Grants of the same tenant never collide. The same id is an update, not a
    collision.
    """
    if new.revoked:
        return None
    for old in sorted(existing, key=lambda e: (e.starts_on, e.id)):
        if old.id == new.id or old.revoked or old.tenant_id == new.tenant_id:
            continue
        if not (old.exclusive or new.exclusive):
            continue
        start, end = max(old.starts_on, new.starts_on), min(old.ends_on, new.ends_on)
        if start > end or not globs_overlap(old.model_group, new.model_group):
            continue
        which = "the existing grant is exclusive" if old.exclusive else "the new grant is exclusive"
        return GrantConflict(
            new.id,
            old.id,
            old.tenant_id,
            start,
            end,
            f"{new.id} ({new.model_group}, tenant {new.tenant_id}) overlaps {old.id} ({old.model_group}, "
            f"tenant {old.tenant_id}) from {start} to {end} and {which}",
        )
    return None
