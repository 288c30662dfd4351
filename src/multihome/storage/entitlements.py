"""Time-bound model entitlements, with race-free exclusivity across tenants.

A grant names a model group or a family of them with one trailing `*` ("legal-*" covers
"legal-ft"). Rule: an exclusive grant may not overlap (inclusive dates, and model groups some name
matches both, `policy.model.globs_overlap`) any other tenant's live grant, and no grant may overlap
another tenant's live exclusive grant, whichever of the two is the wildcard. Grants of the same
tenant never conflict with each other; revoked grants conflict with nothing. The check and the
insert run in one transaction under one lock for every grant (PostgreSQL: a transaction-scoped
advisory lock; SQLite: BEGIN IMMEDIATE), so two concurrent grants cannot both pass the check, even
for two different names such as "legal-*" and "legal-ft".
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from ..policy.model import globs_overlap
from ..schema import admin_fields as fields
from ..schema.errors import echo
from . import rows
from .base import StoreBase, checked, nonempty, refuse_past, utcnow
from .errors import Conflict, Invalid
from .ids import timed_id
from .records import Entitlement
from .row_reads import Page, by_creation, read_all, read_one, read_page
from .rows import Unreadable
from .tables import entitlements

# Not one lock per model group: a family grant ("legal-*") and an exact one ("legal-ft") collide
# without sharing a name. Grants are rare admin changes, so serialising all of them costs nothing.
_GRANT_LOCK = "entitlement-grants"
# Grants not revoked of one tenant at most: every replica's snapshot holds each (docs/storage.md).
MAX_LIVE_PER_TENANT = 1_000


def check_model_group(model_group: str) -> None:
    """Invalid unless `model_group` is a name, or a family glob with its one `*` last ("legal-*")."""
    nonempty(model_group, "model_group")
    if "*" in model_group[:-1]:
        raise Invalid(
            f"model_group may use '*' only as its last character (a family such as 'legal-*'), not '{echo(model_group)}'",
            field="model_group",
        )


class EntitlementsRepo(StoreBase):
    async def grant_entitlement(
        self,
        tenant_id: str,
        *,
        model_group: str,
        starts_on: date,
        ends_on: date,
        exclusive: bool = False,
        note: str = "",
        actor: str,
    ) -> Entitlement:
        check_model_group(model_group)
        checked(fields.day(starts_on, "starts_on"))
        checked(fields.day(ends_on, "ends_on"))
        if ends_on < starts_on:
            raise Invalid(f"ends_on {ends_on} is before starts_on {starts_on}")
        nonempty(note, "note", fields.TEXT_MAX, required=False)
        now = utcnow()
        ent = Entitlement(
            id=timed_id("ent", now),
            tenant_id=tenant_id,
            model_group=model_group,
            starts_on=starts_on,
            ends_on=ends_on,
            exclusive=bool(exclusive),
            note=note,
            created_at=now,
            revoked_at=None,
        )
        async with self._write(lock=_GRANT_LOCK) as conn:
            await self._require_tenant(conn, tenant_id)
            q = sa.select(entitlements).where(
                _may_overlap(model_group),
                entitlements.c.tenant_id != tenant_id,
                entitlements.c.revoked_at.is_(None),
                entitlements.c.starts_on <= ends_on,
                entitlements.c.ends_on >= starts_on,
            )
            if not exclusive:
                q = q.where(entitlements.c.exclusive.is_(True))
            found = await read_all(
                conn, q.order_by(entitlements.c.starts_on, entitlements.c.id), entitlements, rows.entitlement
            )
            # A grant that cannot be read may be in the way (fail closed): unless it is surely not exclusive, or
            # its group surely does not overlap, while this grant is not exclusive.
            for u in found.unreadable:
                if exclusive or (
                    u.exclusive_group is not None
                    and (u.exclusive_group == "*" or globs_overlap(u.exclusive_group, model_group))
                ):
                    raise Conflict(
                        f"cannot grant {'exclusive ' if exclusive else ''}access to model group '{echo(model_group)}': "
                        f"tenant {u.tenant_id}'s grant {u.id} may overlap it and cannot be read ({u.problem}); "
                        "an org admin revokes it first",
                        conflicting=u.id,
                    )
            other = next((r for r in found if globs_overlap(r.model_group, model_group)), None)
            if other is not None:
                kind = "an exclusive" if other.exclusive else "a"
                raise Conflict(
                    f"cannot grant {'exclusive ' if exclusive else ''}access to model group '{echo(model_group)}' "
                    f"from {starts_on} to {ends_on}: tenant {other.tenant_id} holds {kind} grant {other.id} "
                    f"from {other.starts_on} to {other.ends_on}",
                    conflicting=other.id,
                )
            live = (entitlements.c.tenant_id == tenant_id, entitlements.c.revoked_at.is_(None))
            advice = "revoke one it no longer needs first"
            await refuse_past(
                conn, entitlements, live, MAX_LIVE_PER_TENANT, tenant_id, "entitlements not revoked", advice
            )
            await conn.execute(
                sa.insert(entitlements).values(
                    id=ent.id,
                    tenant_id=tenant_id,
                    model_group=model_group,
                    starts_on=starts_on,
                    ends_on=ends_on,
                    exclusive=ent.exclusive,
                    note=note,
                    created_at=ent.created_at,
                    revoked_at=None,
                )
            )
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="entitlement.grant",
                object_type="entitlement",
                object_id=ent.id,
                detail={
                    "model_group": model_group,
                    "starts_on": starts_on.isoformat(),
                    "ends_on": ends_on.isoformat(),
                    "exclusive": ent.exclusive,
                },
                at=ent.created_at,
            )
        return ent

    async def get_entitlement(self, tenant_id: str, entitlement_id: str) -> Entitlement:
        q = sa.select(entitlements).where(entitlements.c.tenant_id == tenant_id, entitlements.c.id == entitlement_id)
        async with self._read() as conn:
            return await read_one(conn, q, entitlements, rows.entitlement, "entitlement", entitlement_id, tenant_id)

    async def page_entitlements(
        self, tenant_id: str, limit: int, after: str | None = None, *, include_revoked: bool = False
    ) -> Page[Entitlement]:
        """A page of the tenant's grants, oldest first, after the grant `after` (its id); `.unreadable` reports
        the page's rows that cannot be read. Revoked grants stay stored: the list grows with every grant made."""
        q = sa.select(entitlements).where(entitlements.c.tenant_id == tenant_id)
        if not include_revoked:
            q = q.where(entitlements.c.revoked_at.is_(None))
        order = entitlements.c.created_at
        async with self._read() as conn:
            return await read_page(conn, q, entitlements, rows.entitlement, order, limit, after, place=by_creation)

    async def revoke_entitlement(self, tenant_id: str, entitlement_id: str, *, actor: str) -> Entitlement | Unreadable:
        return await self._revoke(
            entitlements,
            "entitlement",
            tenant_id,
            entitlement_id,
            actor=actor,
            build=rows.entitlement,
            detail=lambda e: {"model_group": e.model_group},
        )


def _may_overlap(model_group: str):
    """SQL narrowing of the grants whose model group can name one `model_group` names (exact: the
    same name, or any family; a family: also every name it covers). globs_overlap decides."""
    family = entitlements.c.model_group.endswith("*", autoescape=True)
    if model_group.endswith("*"):
        return sa.or_(family, entitlements.c.model_group.startswith(model_group[:-1], autoescape=True))
    return sa.or_(family, entitlements.c.model_group == model_group)
