"""Stateful-work pins as stored: created, listed, read and revoked by an admin, each change audited.

A pin is never edited in place: a different pin is a new row, and revoking one keeps the row (with
`revoked_at`) so the record of what applied when stays. What a pin means, and the checks its
fields must pass, are multihome.policy.pins'; the admin API also checks the names against the
catalog (a provider or data zone that does not exist is a typo, refused with a 400).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..policy.pins import StatefulPin as EnginePin
from ..policy.pins import pin_problems
from . import rows
from .base import StoreBase, as_utc, refuse_past, utcnow
from .errors import Invalid
from .ids import timed_id
from .records import StatefulPin
from .row_reads import Page, by_creation, read_one, read_page
from .rows import Unreadable
from .tables import stateful_pins

# Pins not revoked of one tenant at most: every replica's snapshot holds each, ended or not (docs/storage.md).
MAX_LIVE_PER_TENANT = 1_000


def pin_from_row(r: Any) -> StatefulPin:
    return StatefulPin(
        id=r.id,
        tenant_id=r.tenant_id,
        # As stored (a JSON array, or null), not coerced: list() of a number raised and stopped every
        # snapshot reload, of a string made a list of letters. api/policy_gate.py checks the types.
        providers=r.providers,
        data_zones=r.data_zones,
        work=r.work,
        valid_from=as_utc(r.valid_from),
        valid_until=as_utc(r.valid_until),
        note=r.note,
        created_at=as_utc(r.created_at),
        revoked_at=as_utc(r.revoked_at),
    )


_PIN = rows.lenient(pin_from_row)


class PinsRepo(StoreBase):
    async def create_pin(
        self,
        tenant_id: str,
        *,
        providers: list[str] | None,
        data_zones: list[str] | None,
        work: list[str] | None,
        valid_from: datetime | None,
        valid_until: datetime | None,
        note: str = "",
        actor: str,
    ) -> StatefulPin:
        now = utcnow()
        start = valid_from or now
        problems = pin_problems(
            EnginePin(
                id="new",
                tenant_id=tenant_id,
                providers=providers,
                data_zones=data_zones,
                work=work,
                valid_from=start,
                valid_until=valid_until,
                note=note or None,
            )
        )
        if problems:
            raise Invalid("; ".join(problems[:5]))
        pin = StatefulPin(
            id=timed_id("pin", now),
            tenant_id=tenant_id,
            providers=providers,
            data_zones=data_zones,
            work=work,
            valid_from=as_utc(start),
            valid_until=as_utc(valid_until),
            note=note,
            created_at=now,
            revoked_at=None,
        )
        # One lock per tenant (PostgreSQL; SQLite serializes writes): concurrent creates cannot all count room.
        async with self._write(lock=f"stateful-pins:{tenant_id}") as conn:
            await self._require_tenant(conn, tenant_id)
            live = (stateful_pins.c.tenant_id == tenant_id, stateful_pins.c.revoked_at.is_(None))
            advice = "revoke one it no longer needs first"
            await refuse_past(conn, stateful_pins, live, MAX_LIVE_PER_TENANT, tenant_id, "pins not revoked", advice)
            await conn.execute(
                sa.insert(stateful_pins).values(
                    id=pin.id,
                    tenant_id=tenant_id,
                    providers=providers,
                    data_zones=data_zones,
                    work=work,
                    valid_from=pin.valid_from,
                    valid_until=pin.valid_until,
                    note=note,
                    created_at=now,
                    revoked_at=None,
                )
            )
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="stateful_pin.create",
                object_type="stateful_pin",
                object_id=pin.id,
                detail=_detail(pin),
                at=now,
            )
        return pin

    async def get_pin(self, tenant_id: str, pin_id: str) -> StatefulPin:
        q = sa.select(stateful_pins).where(stateful_pins.c.tenant_id == tenant_id, stateful_pins.c.id == pin_id)
        async with self._read() as conn:
            return await read_one(conn, q, stateful_pins, _PIN, "stateful pin", pin_id, tenant_id)

    async def page_pins(
        self, tenant_id: str, limit: int, after: str | None = None, *, include_revoked: bool = False
    ) -> Page[StatefulPin]:
        """A page of the tenant's pins as stored (policy/pins.py checks them), oldest first, after the pin `after`
        (its id); `.unreadable`: those the driver cannot decode. Revoked pins stay stored: the list grows with
        every pin made."""
        q = sa.select(stateful_pins).where(stateful_pins.c.tenant_id == tenant_id)
        if not include_revoked:
            q = q.where(stateful_pins.c.revoked_at.is_(None))
        order = stateful_pins.c.created_at
        async with self._read() as conn:
            return await read_page(conn, q, stateful_pins, _PIN, order, limit, after, place=by_creation)

    async def revoke_pin(self, tenant_id: str, pin_id: str, *, actor: str) -> StatefulPin | Unreadable:
        return await self._revoke(
            stateful_pins, "stateful_pin", tenant_id, pin_id, actor=actor, build=_PIN, detail=_detail
        )


def _detail(pin: StatefulPin) -> dict[str, Any]:
    return {
        "providers": pin.providers,
        "data_zones": pin.data_zones,
        "work": pin.work,
        "valid_from": pin.valid_from.isoformat(),
        "valid_until": pin.valid_until.isoformat() if pin.valid_until is not None else None,
    }
