"""Policies: rules (JSON, interpreted by multihome.policy) attached to a tenant, a team or a key.

Authority: each row records the role that set or last changed it. A policy an org-admin set (an
organisation's residency rule) is not a tenant-admin's to change or delete; the check runs inside the
write, so a policy an org-admin took over a moment earlier is never changed by a tenant-admin.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from ..schema import admin_fields as fields
from ..schema.errors import echo
from ..schema.principal import ORG_ADMIN, TENANT_ADMIN
from . import rows
from .base import StoreBase, as_utc, checked, nonempty, refuse_past, utcnow
from .errors import Invalid, NotFound, StorageError
from .ids import timed_id
from .key_roles import refuse_privileged_key
from .records import BudgetRole, Policy, PolicyScope
from .row_reads import Page, by_creation, either, one, read_one, read_page
from .rows import Unreadable
from .tables import policies

SCOPES = ("tenant", "team", "key")
# The stored rules object ({"egress": [rule, ...]}) as JSON: room for policy.model's limits
# (100 rules of up to 6 dimensions of 100 values) without letting one policy fill the snapshot.
RULES_MAX_BYTES = 256 * 1024
RULES_MAX_ITEMS = 20_000
RULES_MAX_DEPTH = 4
# Policies of one tenant at most: every replica compiles and holds each (up to RULES_MAX_BYTES of rules), so a
# tenant admin making policy after policy grew them all for good.
MAX_POLICIES_PER_TENANT = 1_000
# And their rules, together, at most this many characters of JSON: 1,000 policies of 256 KiB were 256 MB held
# by every replica (and one list answer); this leaves room for 64 of the largest, or thousands of the usual few KB.
RULES_MAX_CHARS_PER_TENANT = 16 * 1024 * 1024
SETTERS: tuple[BudgetRole, ...] = ("org-admin", "tenant-admin")  # schema.principal ORG_ADMIN, TENANT_ADMIN


class PolicyOutranked(StorageError):
    """A tenant-admin tried to change or delete a policy an org-admin set (the admin API's 403)."""

    def __init__(self, policy_id: str, doing: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"Policy {echo(policy_id)} was set by an org-admin, so a tenant-admin may not {doing} it; add a "
            "policy of your own to narrow it further (policies only ever narrow each other), or ask an org admin."
        )
        self.policy_id = policy_id


def _setter(role: str) -> BudgetRole:
    for option in SETTERS:
        if role == option:
            return option
    raise Invalid(f"role must be one of {', '.join(SETTERS)}, not '{echo(role)}'")


def policy_from_row(r: Any) -> Policy:
    return Policy(
        id=r.id,
        tenant_id=r.tenant_id,
        scope=r.scope,
        scope_id=r.scope_id,
        # As stored, not coerced: dict() of a list read [{"effect": "deny", "regions": [...]}] as
        # {"effect": "regions"}, no rules; of null it raised and stopped every snapshot reload. A row
        # that is not an object refuses its tenant's calls (api/policy_gate.py).
        rules=r.rules,
        description=r.description,
        created_at=as_utc(r.created_at),
        updated_at=as_utc(r.updated_at),
        set_by_role=r.set_by_role,
    )


_POLICY = rows.lenient(policy_from_row)  # as stored: the policy gate checks what the rules hold


async def _refuse_rules_past(conn: Any, tenant_id: str, rules: dict[str, Any], replacing: str | None = None) -> None:
    """Invalid (a 400) when `rules` would take the tenant's policies past RULES_MAX_CHARS_PER_TENANT (`replacing`:
    the policy whose rules these replace, not counted). Measured as stored: the JSON text SQLAlchemy writes."""
    text = sa.func.length(sa.cast(policies.c.rules, sa.Text))
    q = sa.select(sa.func.coalesce(sa.func.sum(text), 0)).where(policies.c.tenant_id == tenant_id)
    if replacing is not None:
        q = q.where(policies.c.id != replacing)
    held = int(await conn.scalar(q) or 0)
    adding = len(json.dumps(rules))
    if held + adding > RULES_MAX_CHARS_PER_TENANT:
        raise Invalid(
            f"tenant {tenant_id}'s policies hold {held} characters of rules; these {adding} would pass the most a "
            f"tenant may hold ({RULES_MAX_CHARS_PER_TENANT}): make rules smaller, or delete a policy first",
            field="rules",
        )


def _rules(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("policy rules must be a JSON object", field="rules")
    # multihome.policy checks what the rules mean (and their own limits); this bounds their size.
    checked(
        fields.json_value(
            value,
            "rules",
            max_bytes=RULES_MAX_BYTES,
            max_items=RULES_MAX_ITEMS,
            max_depth=RULES_MAX_DEPTH,
            key_max=fields.NAME_MAX,
            string_max=fields.TEXT_MAX,
        )
    )
    return value


class PoliciesRepo(StoreBase):
    async def create_policy(
        self,
        tenant_id: str,
        *,
        scope: PolicyScope,
        scope_id: str | None = None,
        rules: dict[str, Any],
        description: str = "",
        actor: str,
        role: str = ORG_ADMIN,
    ) -> Policy:
        """`role`: the setter's, org-admin or tenant-admin (a tenant-admin's own policy stays its to change)."""
        if scope not in SCOPES:
            raise Invalid(f"policy scope must be one of {list(SCOPES)}, not '{echo(scope)}'")
        nonempty(description, "description", fields.TEXT_MAX, required=False)
        now = utcnow()
        policy = Policy(
            id=timed_id("pol", now),
            tenant_id=tenant_id,
            scope=scope,
            scope_id=scope_id or tenant_id,
            rules=_rules(rules),
            description=description,
            created_at=now,
            updated_at=now,
            set_by_role=_setter(role),
        )
        # One lock per tenant (PostgreSQL; SQLite serializes writes): concurrent creates cannot all count room
        # for one and all insert.
        async with self._write(lock=f"policies:{tenant_id}") as conn:
            await self._require_tenant(conn, tenant_id)
            await self._require_scope(conn, tenant_id, scope, policy.scope_id, "policy")
            if scope == "key" and policy.set_by_role != ORG_ADMIN:  # in the write, as a budget's (key_roles.py)
                await refuse_privileged_key(conn, tenant_id, policy.scope_id, lock=not self._sqlite)
            mine = (policies.c.tenant_id == tenant_id,)
            await refuse_past(
                conn,
                policies,
                mine,
                MAX_POLICIES_PER_TENANT,
                tenant_id,
                "policies",
                "delete one it no longer needs, or put its rules in another first",
            )
            await _refuse_rules_past(conn, tenant_id, policy.rules)
            await conn.execute(
                sa.insert(policies).values(
                    id=policy.id,
                    tenant_id=tenant_id,
                    scope=scope,
                    scope_id=policy.scope_id,
                    rules=policy.rules,
                    description=description,
                    created_at=now,
                    updated_at=now,
                    set_by_role=policy.set_by_role,
                )
            )
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="policy.create",
                object_type="policy",
                object_id=policy.id,
                detail={
                    "scope": scope,
                    "scope_id": policy.scope_id,
                    "rules": policy.rules,
                    "set_by_role": policy.set_by_role,
                },
                at=now,
            )
        return policy

    async def get_policy(self, tenant_id: str, policy_id: str) -> Policy:
        q = sa.select(policies).where(policies.c.tenant_id == tenant_id, policies.c.id == policy_id)
        async with self._read() as conn:
            return await read_one(conn, q, policies, _POLICY, "policy", policy_id, tenant_id)

    async def policy_scope(self, tenant_id: str, policy_id: str) -> tuple[str, str | None]:
        """A policy's (scope, scope_id), read alone: the rest of its row may be what cannot be read."""
        q = sa.select(policies.c.scope, policies.c.scope_id).where(
            policies.c.tenant_id == tenant_id, policies.c.id == policy_id
        )
        async with self._read() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise NotFound("policy", policy_id, tenant_id)
        return row.scope, row.scope_id

    async def policy_owner(self, tenant_id: str, policy_id: str) -> tuple[str, str | None, str]:
        """A policy's (scope, scope_id, set_by_role), read alone: the rest of its row may be unreadable."""
        q = sa.select(policies.c.scope, policies.c.scope_id, policies.c.set_by_role).where(
            policies.c.tenant_id == tenant_id, policies.c.id == policy_id
        )
        async with self._read() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise NotFound("policy", policy_id, tenant_id)
        return row.scope, row.scope_id, row.set_by_role

    async def page_policies(self, tenant_id: str, limit: int, after: str | None = None) -> Page[Policy]:
        """A page of the tenant's policies as stored (the policy gate checks them), oldest first, after the policy
        `after` (its id); `.unreadable`: those of the page the driver cannot decode."""
        q = sa.select(policies).where(policies.c.tenant_id == tenant_id)
        async with self._read() as conn:
            return await read_page(conn, q, policies, _POLICY, policies.c.created_at, limit, after, place=by_creation)

    async def update_policy(
        self,
        tenant_id: str,
        policy_id: str,
        *,
        rules: dict[str, Any] | None = None,
        description: str | None = None,
        actor: str,
        role: str = ORG_ADMIN,
    ) -> Policy | Unreadable:
        """A policy whose row cannot be read is changed too (replacing its rules mends it); if it still
        cannot be read, what is wrong with it is returned. A tenant-admin (`role`) may not change a policy
        an org-admin set (PolicyOutranked); one an org-admin changes becomes the org-admin's."""
        now = utcnow()
        changes: dict[str, Any] = {"updated_at": now}
        if rules is not None:
            changes["rules"] = _rules(rules)
        if description is not None:
            changes["description"] = nonempty(description, "description", fields.TEXT_MAX, required=False)
        where = (policies.c.tenant_id == tenant_id, policies.c.id == policy_id)
        q = sa.select(policies).where(*where)
        # The tenant's lock, as a create's: concurrent changes cannot all count room for one.
        async with self._write(lock=f"policies:{tenant_id}") as conn:
            setter = await self._authority(conn, where, policy_id, tenant_id, role, "change")
            if rules is not None:
                await _refuse_rules_past(conn, tenant_id, changes["rules"], replacing=policy_id)
            before, bad = await one(conn, q, policies, _POLICY)
            changes["set_by_role"] = ORG_ADMIN if ORG_ADMIN in (role, setter) else TENANT_ADMIN
            await conn.execute(sa.update(policies).where(*where).values(**changes))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="policy.update",
                object_type="policy",
                object_id=policy_id,
                detail={
                    "before": {"rules": before.rules, "description": before.description}
                    if before is not None
                    else {"unreadable": bad.problem if bad else ""},
                    "after": {k: v for k, v in changes.items() if k != "updated_at"},
                    "role": role,
                },
                at=now,
            )
            after, bad = await one(conn, q, policies, _POLICY)
        return either(after, bad)

    async def delete_policy(self, tenant_id: str, policy_id: str, *, actor: str, role: str = ORG_ADMIN) -> None:
        """A tenant-admin (`role`) may not delete a policy an org-admin set (PolicyOutranked)."""
        where = (policies.c.tenant_id == tenant_id, policies.c.id == policy_id)
        async with self._write() as conn:
            setter = await self._authority(conn, where, policy_id, tenant_id, role, "delete")
            before, bad = await one(conn, sa.select(policies).where(*where), policies, _POLICY)
            # Its scope read alone: the rest of the row may be what cannot be read (deleting mends it).
            scope = (await conn.execute(sa.select(policies.c.scope, policies.c.scope_id).where(*where))).one()
            await conn.execute(sa.delete(policies).where(*where))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="policy.delete",
                object_type="policy",
                object_id=policy_id,
                detail={
                    "scope": scope.scope,
                    "scope_id": scope.scope_id,
                    "set_by_role": setter,
                    **({"rules": before.rules} if before is not None else {"unreadable": bad.problem if bad else ""}),
                },
            )

    async def _authority(self, conn: Any, where: Any, policy_id: str, tenant_id: str, role: str, doing: str) -> str:
        """Who set the policy, read alone and locked (FOR UPDATE, PostgreSQL) so that an org-admin's change
        meanwhile is seen; PolicyOutranked if `role` may not `doing` it. Its other fields may be unreadable:
        the setter alone decides."""
        setter = await conn.scalar(sa.select(policies.c.set_by_role).where(*where).with_for_update())
        if setter is None:
            raise NotFound("policy", policy_id, tenant_id)
        if role != ORG_ADMIN and setter != TENANT_ADMIN:
            raise PolicyOutranked(policy_id, doing)
        return str(setter)
