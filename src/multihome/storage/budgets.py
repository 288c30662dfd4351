"""Budgets set through the admin API: a spending limit on a tenant, a team or an API key.

One budget per counter: (scope, scope_id, period, currency) is unique, and it is what metering
counts spend against, so changing a budget's amount keeps what was spent. Amounts are exact
decimals stored as text. Every change bumps `state_version`, so each replica's metering picks it
up from its next snapshot.

Authority: each row records the role that set it. A budget an org-admin set or changed is a cap a
tenant-admin may tighten (lower the amount, make it hard) but never lift (raise it, make it soft,
delete it). A budget on a key that holds a role only an org-admin grants (auditor, org-admin) is a
change to that key: a tenant-admin may neither set nor change nor delete one, whoever set it (one set
before that rule, migration 0026). The checks run inside the write, so a cap set a moment earlier is
never lifted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa

from ..config.decimals import exact, places
from ..config.metering import BUDGET_MAX, BUDGET_PLACES
from ..schema.errors import echo
from ..schema.principal import ORG_ADMIN, TENANT_ADMIN
from . import rows
from .base import StoreBase, refuse_past, utcnow
from .errors import Conflict, Invalid, NotFound, StorageError
from .ids import new_id
from .key_roles import NO_KEY, key_roles, org_granted, refuse_privileged_key
from .records import Budget, BudgetMode, BudgetPeriod, BudgetRole, PolicyScope
from .row_reads import Listed, either, one, read_all, read_one
from .rows import Unreadable
from .tables import budgets

SCOPES: tuple[PolicyScope, ...] = ("tenant", "team", "key")
PERIODS: tuple[BudgetPeriod, ...] = ("day", "month", "total")
MODES: tuple[BudgetMode, ...] = ("hard", "soft")
SETTERS: tuple[BudgetRole, ...] = ("org-admin", "tenant-admin")  # schema.principal's ORG_ADMIN, TENANT_ADMIN
# Counters hold nano-units in a signed 64-bit integer (Redis): 1e9 units leaves ample headroom.
MAX_AMOUNT = BUDGET_MAX
# Budgets one tenant may hold. Each is a headroom series of the metrics (docs/metrics.md) and a rule every
# call of its scope is checked against; a tenant admin could otherwise make one per currency code and
# period on the tenant alone (17,576 x 5), or one per key they make.
MAX_BUDGETS_PER_TENANT = 1_000
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class Outranked(StorageError):
    """A tenant-admin tried to lift a budget an org-admin set (the admin API's 403)."""


def _lifts(before: Any, changes: dict[str, Any]) -> str | None:
    """What in `changes` loosens the budget `before` (None: it only tightens or keeps it)."""
    if "amount" in changes and Decimal(changes["amount"]) > Decimal(before.amount):
        return f"raise its amount from {before.amount} to {changes['amount']}"
    if changes.get("mode") == "soft" and before.mode == "hard":
        return "make it soft"
    return None


def _check_authority(before: Any, role: str, lifts: str | None) -> None:
    if lifts is not None and before.set_by_role == ORG_ADMIN and role != ORG_ADMIN:
        raise Outranked(
            f"Budget {before.id} was set by an org-admin, so it is a cap a tenant-admin may tighten (lower its "
            f"amount, make it hard) but not lift: you may not {lifts}. Ask an org admin."
        )


def budget_amount(value: Any) -> str:
    """A positive amount of at most 9 decimal places (nano-units) as canonical text, else Invalid."""
    try:
        amount = exact(value)
    except ValueError as exc:
        raise Invalid(f"amount {exc}") from None
    if not amount.is_finite() or amount <= 0:
        raise Invalid(f"amount must be greater than 0, not '{echo(value)}'")
    if amount > MAX_AMOUNT:
        raise Invalid(f"amount must be at most {MAX_AMOUNT}")
    if places(amount) > BUDGET_PLACES:  # before normalize(), which rounds 1E-1000000000 to 0
        raise Invalid(f"amount has more than {BUDGET_PLACES} decimal places (budgets count in nano-units)")
    return format(amount.normalize(), "f")


def budget_currency(value: Any) -> str:
    code = value.upper() if isinstance(value, str) else ""
    if not _CURRENCY.match(code):
        raise Invalid(f"currency must be a three-letter ISO 4217 code such as USD, not '{echo(value)}'")
    return code


_Option = TypeVar("_Option", bound=str)


def _one_of(value: Any, allowed: tuple[_Option, ...], what: str) -> _Option:
    """`value` as the option it equals (typed as the column's Literal), else Invalid."""
    for option in allowed:
        if value == option:
            return option
    raise Invalid(f"{what} must be one of {', '.join(allowed)}, not '{echo(value)}'")


def _detail(b: Budget) -> dict[str, Any]:
    return {
        "scope": b.scope,
        "scope_id": b.scope_id,
        "amount": b.amount,
        "currency": b.currency,
        "period": b.period,
        "mode": b.mode,
        "set_by_role": b.set_by_role,
    }


class BudgetsRepo(StoreBase):
    async def create_budget(
        self,
        tenant_id: str,
        *,
        scope: str,
        scope_id: str | None = None,
        amount: Any,
        currency: str = "USD",
        period: str = "month",
        mode: str = "hard",
        actor: str,
        role: str = ORG_ADMIN,
    ) -> Budget:
        """Refused with Conflict when the counter already has a budget (change that one instead).
        `role`: the setter's, org-admin or tenant-admin."""
        now = utcnow()
        budget = Budget(
            id=new_id("bud"),
            tenant_id=tenant_id,
            scope=_one_of(scope, SCOPES, "scope"),
            scope_id=scope_id or tenant_id,
            amount=budget_amount(amount),
            currency=budget_currency(currency),
            period=_one_of(period, PERIODS, "period"),
            mode=_one_of(mode, MODES, "mode"),
            created_at=now,
            updated_at=now,
            set_by_role=_one_of(role, SETTERS, "role"),
        )
        slot = (
            budgets.c.scope == budget.scope,
            budgets.c.scope_id == budget.scope_id,
            budgets.c.period == budget.period,
            budgets.c.currency == budget.currency,
        )
        # One lock per tenant, not per slot: the cap counts the tenant's budgets, so creates on other slots
        # (other keys, teams) must not count at once and all insert (PostgreSQL; SQLite serializes writes).
        async with self._write(lock=f"budgets:{tenant_id}") as conn:
            await self._require_tenant(conn, tenant_id)
            await self._require_scope(conn, tenant_id, budget.scope, budget.scope_id, "budget")
            if budget.scope == "key" and budget.set_by_role != ORG_ADMIN:
                # In the write, the key's row locked (PostgreSQL), as update and delete check theirs: the roles
                # the budget is judged by are the ones it is written beside.
                await refuse_privileged_key(conn, tenant_id, budget.scope_id, lock=not self._sqlite)
            taken = await conn.scalar(sa.select(budgets.c.id).where(*slot))
            if taken is not None:
                raise Conflict(
                    f"{budget.scope} {budget.scope_id} already has a {budget.period} {budget.currency} "
                    f"budget ({taken}); change its amount instead",
                    conflicting=taken,
                )
            mine = (budgets.c.tenant_id == tenant_id,)
            await refuse_past(
                conn, budgets, mine, MAX_BUDGETS_PER_TENANT, tenant_id, "budgets", "delete one it no longer needs first"
            )
            await conn.execute(sa.insert(budgets).values(**{f: getattr(budget, f) for f in budget.__struct_fields__}))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="budget.create",
                object_type="budget",
                object_id=budget.id,
                detail=_detail(budget),
                at=now,
            )
        return budget

    async def get_budget(self, tenant_id: str, budget_id: str) -> Budget:
        q = sa.select(budgets).where(budgets.c.tenant_id == tenant_id, budgets.c.id == budget_id)
        async with self._read() as conn:
            return await read_one(conn, q, budgets, rows.budget, "budget", budget_id, tenant_id)

    async def list_budgets(self, tenant_id: str) -> Listed[Budget]:
        """The tenant's readable budgets; `.unreadable` reports the others (metering refuses their tenant)."""
        q = sa.select(budgets).where(budgets.c.tenant_id == tenant_id).order_by(budgets.c.created_at, budgets.c.id)
        async with self._read() as conn:
            return await read_all(conn, q, budgets, rows.budget)

    async def update_budget(
        self,
        tenant_id: str,
        budget_id: str,
        *,
        amount: Any = None,
        mode: str | None = None,
        actor: str,
        role: str = ORG_ADMIN,
    ) -> Budget | Unreadable:
        """Change the amount and/or the mode. The counter (and what it has counted) stays. A tenant-admin
        (`role`) may not lift a budget an org-admin set (Outranked); one an org-admin changes is theirs.
        A budget whose row cannot be read is changed too (a good amount mends it); if it still cannot be
        read, what is wrong with it is returned."""
        changes: dict[str, Any] = {}
        if amount is not None:
            changes["amount"] = budget_amount(amount)
        if mode is not None:
            changes["mode"] = _one_of(mode, MODES, "mode")
        if not changes:
            raise Invalid("nothing to change: give amount and/or mode")
        now = utcnow()
        where = (budgets.c.tenant_id == tenant_id, budgets.c.id == budget_id)
        async with self._write() as conn:
            # FOR UPDATE: a cap an org-admin sets meanwhile is seen, not overwritten (PostgreSQL).
            before, bad, setter = await self._before(
                conn, where, budget_id, tenant_id, role, lambda b: _lifts(b, changes)
            )
            was = {k: getattr(before, k) for k in changes} if before is not None else _unreadable(bad)
            owner = ORG_ADMIN if ORG_ADMIN in (role, setter) else TENANT_ADMIN
            await conn.execute(sa.update(budgets).where(*where).values(**changes, set_by_role=owner, updated_at=now))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="budget.update",
                object_type="budget",
                object_id=budget_id,
                at=now,
                detail={"before": was, "after": changes, "role": role},
            )
            after, bad = await one(conn, sa.select(budgets).where(*where), budgets, rows.budget)
        return either(after, bad)

    async def delete_budget(
        self, tenant_id: str, budget_id: str, *, actor: str, role: str = ORG_ADMIN
    ) -> Budget | Unreadable:
        """Remove the limit; returns what was deleted (or what was wrong with a row that could not be read).
        A tenant-admin (`role`) may not delete a budget an org-admin set (Outranked)."""
        where = (budgets.c.tenant_id == tenant_id, budgets.c.id == budget_id)
        async with self._write() as conn:
            gone, bad, _ = await self._before(conn, where, budget_id, tenant_id, role, lambda b: "delete it")
            await conn.execute(sa.delete(budgets).where(*where))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="budget.delete",
                object_type="budget",
                object_id=budget_id,
                detail=_detail(gone) if gone is not None else _unreadable(bad),
            )
        return either(gone, bad)

    async def _before(
        self, conn: Any, where: Any, budget_id: str, tenant_id: str, role: str, lifts: Callable[[Budget], str | None]
    ) -> tuple[Budget | None, Unreadable | None, str | None]:
        """The budget a change starts from, locked (FOR UPDATE), after the authority check: (the budget, or
        None and what is wrong with its row; who set it)."""
        before, bad = await one(conn, sa.select(budgets).where(*where).with_for_update(), budgets, rows.budget)
        if before is not None:
            if role != ORG_ADMIN and before.scope == "key":
                await _check_key(conn, budget_id, tenant_id, before.scope_id)
            _check_authority(before, role, lifts(before))
            return before, None, before.set_by_role
        if bad is None:
            raise NotFound("budget", budget_id, tenant_id)
        # Whether it lifts a cap cannot be told: only an org-admin, or a tenant-admin on a tenant-admin's budget.
        held = (
            await conn.execute(sa.select(budgets.c.set_by_role, budgets.c.scope, budgets.c.scope_id).where(*where))
        ).one()
        if role != ORG_ADMIN and held.set_by_role != TENANT_ADMIN:
            raise Outranked(
                f"Budget {budget_id} cannot be read ({bad.problem}) and was not set by a tenant-admin, so only an "
                "org admin may change or delete it."
            )
        if role != ORG_ADMIN and held.scope == "key":
            await _check_key(conn, budget_id, tenant_id, held.scope_id)
        return None, bad, held.set_by_role


async def _check_key(conn: Any, budget_id: str, tenant_id: str, key_id: str) -> None:
    """Outranked when the budget's key holds a role only an org-admin grants (or roles that cannot be read,
    which may be one): a cap on such a key is a change to it, an org-admin's to make, whoever set it."""
    roles = await key_roles(conn, tenant_id, key_id)
    if roles is NO_KEY:
        return  # no such key (any more): the budget caps nobody's key
    found = org_granted(roles)
    if found is None:
        return
    held = ", ".join(found)
    what = f"holds the {held} role" if held else "has roles that cannot be read"
    raise Outranked(
        f"Budget {budget_id} is on key {key_id}, which {what}: a budget on a key holding a role only an "
        "org-admin grants is an org admin's to change or delete. Ask an org admin."
    )


def _unreadable(bad: Unreadable | None) -> dict[str, Any]:
    """An admin event's detail for a row that could not be read: what was wrong, never its values."""
    return {"unreadable": bad.problem if bad is not None else ""}
