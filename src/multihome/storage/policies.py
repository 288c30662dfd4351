"""Policies: rules (JSON, interpreted by multihome.policy) attached to a tenant, a team or a key."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..schema import admin_fields as fields
from ..schema.errors import echo
from . import rows
from .base import StoreBase, as_utc, checked, nonempty, utcnow
from .errors import Invalid, NotFound
from .ids import new_id
from .records import Policy, PolicyScope
from .row_reads import Listed, either, one, read_all, read_one
from .rows import Unreadable
from .tables import policies

SCOPES = ("tenant", "team", "key")
# The stored rules object ({"egress": [rule, ...]}) as JSON: room for policy.model's limits
# (100 rules of up to 6 dimensions of 100 values) without letting one policy fill the snapshot.
RULES_MAX_BYTES = 256 * 1024
RULES_MAX_ITEMS = 20_000
RULES_MAX_DEPTH = 4


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
    )


_POLICY = rows.lenient(policy_from_row)  # as stored: the policy gate checks what the rules hold


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
    ) -> Policy:
        if scope not in SCOPES:
            raise Invalid(f"policy scope must be one of {list(SCOPES)}, not '{echo(scope)}'")
        nonempty(description, "description", fields.TEXT_MAX, required=False)
        now = utcnow()
        policy = Policy(
            id=new_id("pol"),
            tenant_id=tenant_id,
            scope=scope,
            scope_id=scope_id or tenant_id,
            rules=_rules(rules),
            description=description,
            created_at=now,
            updated_at=now,
        )
        async with self._write() as conn:
            await self._require_tenant(conn, tenant_id)
            await self._require_scope(conn, tenant_id, scope, policy.scope_id, "policy")
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
                )
            )
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="policy.create",
                object_type="policy",
                object_id=policy.id,
                detail={"scope": scope, "scope_id": policy.scope_id, "rules": policy.rules},
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

    async def list_policies(
        self, tenant_id: str, *, scope: PolicyScope | None = None, scope_id: str | None = None
    ) -> Listed[Policy]:
        """As stored (the policy gate checks them); `.unreadable`: those the driver cannot decode."""
        q = sa.select(policies).where(policies.c.tenant_id == tenant_id)
        if scope is not None:
            q = q.where(policies.c.scope == scope)
        if scope_id is not None:
            q = q.where(policies.c.scope_id == scope_id)
        async with self._read() as conn:
            return await read_all(conn, q.order_by(policies.c.created_at, policies.c.id), policies, _POLICY)

    async def update_policy(
        self,
        tenant_id: str,
        policy_id: str,
        *,
        rules: dict[str, Any] | None = None,
        description: str | None = None,
        actor: str,
    ) -> Policy | Unreadable:
        """A policy whose row cannot be read is changed too (replacing its rules mends it); if it still
        cannot be read, what is wrong with it is returned."""
        now = utcnow()
        changes: dict[str, Any] = {"updated_at": now}
        if rules is not None:
            changes["rules"] = _rules(rules)
        if description is not None:
            changes["description"] = nonempty(description, "description", fields.TEXT_MAX, required=False)
        where = (policies.c.tenant_id == tenant_id, policies.c.id == policy_id)
        q = sa.select(policies).where(*where)
        async with self._write() as conn:
            before, bad = await one(conn, q, policies, _POLICY)
            if before is None and bad is None:
                raise NotFound("policy", policy_id, tenant_id)
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
                },
                at=now,
            )
            after, bad = await one(conn, q, policies, _POLICY)
        return either(after, bad)

    async def delete_policy(self, tenant_id: str, policy_id: str, *, actor: str) -> None:
        where = (policies.c.tenant_id == tenant_id, policies.c.id == policy_id)
        async with self._write() as conn:
            before, bad = await one(conn, sa.select(policies).where(*where), policies, _POLICY)
            if before is None and bad is None:
                raise NotFound("policy", policy_id, tenant_id)
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
                    **({"rules": before.rules} if before is not None else {"unreadable": bad.problem if bad else ""}),
                },
            )
