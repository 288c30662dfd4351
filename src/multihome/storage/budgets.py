"""Budgets set through the admin API: a spending limit on a tenant, a team or an API key.

One budget per counter: (scope, scope_id, period, currency) is unique, and it is what metering
counts spend against, so changing a budget's amount keeps what was spent. Amounts are exact
decimals stored as text. Every change bumps `state_version`, so each replica's metering picks it
up from its next snapshot.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from .base import StoreBase, as_utc, utcnow
from .errors import Conflict, Invalid, NotFound
from .ids import new_id
from .records import Budget
from .tables import budgets

SCOPES = ("tenant", "team", "key")
PERIODS = ("day", "month", "total")
MODES = ("hard", "soft")
# Counters hold nano-units in a signed 64-bit integer (Redis): 1e9 units leaves ample headroom.
MAX_AMOUNT = Decimal(1_000_000_000)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def budget_from_row(r: Any) -> Budget:
    return Budget(id=r.id, tenant_id=r.tenant_id, scope=r.scope, scope_id=r.scope_id, amount=r.amount,
                  currency=r.currency, period=r.period, mode=r.mode, created_at=as_utc(r.created_at),
                  updated_at=as_utc(r.updated_at))


def budget_amount(value: Any) -> str:
    """A positive amount of at most 9 decimal places (nano-units) as canonical text, else Invalid."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise Invalid("amount must be a number or a decimal string, e.g. \"25.00\"")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise Invalid(f"amount must be a decimal number, e.g. \"25.00\", not {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise Invalid(f"amount must be greater than 0, not {value!r}")
    if amount > MAX_AMOUNT:
        raise Invalid(f"amount must be at most {MAX_AMOUNT}")
    if amount.normalize().as_tuple().exponent < -9:
        raise Invalid("amount has more than 9 decimal places (budgets count in nano-units)")
    return format(amount.normalize(), "f")


def budget_currency(value: Any) -> str:
    code = value.upper() if isinstance(value, str) else ""
    if not _CURRENCY.match(code):
        raise Invalid(f"currency must be a three-letter ISO 4217 code such as USD, not {value!r}")
    return code


def _one_of(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise Invalid(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _detail(b: Budget) -> dict[str, Any]:
    return {"scope": b.scope, "scope_id": b.scope_id, "amount": b.amount, "currency": b.currency,
            "period": b.period, "mode": b.mode}


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
    ) -> Budget:
        """Refused with Conflict when the counter already has a budget (change that one instead)."""
        now = utcnow()
        budget = Budget(
            id=new_id("bud"), tenant_id=tenant_id, scope=_one_of(scope, SCOPES, "scope"),  # type: ignore[arg-type]
            scope_id=scope_id or tenant_id, amount=budget_amount(amount), currency=budget_currency(currency),
            period=_one_of(period, PERIODS, "period"), mode=_one_of(mode, MODES, "mode"),  # type: ignore[arg-type]
            created_at=now, updated_at=now,
        )
        slot = (budgets.c.scope == budget.scope, budgets.c.scope_id == budget.scope_id,
                budgets.c.period == budget.period, budgets.c.currency == budget.currency)
        async with self._write(lock=f"budget:{budget.scope}:{budget.scope_id}") as conn:
            await self._require_tenant(conn, tenant_id)
            await self._require_scope(conn, tenant_id, budget.scope, budget.scope_id, "budget")
            taken = await conn.scalar(sa.select(budgets.c.id).where(*slot))
            if taken is not None:
                raise Conflict(f"{budget.scope} {budget.scope_id} already has a {budget.period} {budget.currency} "
                               f"budget ({taken}); change its amount instead", conflicting=taken)
            await conn.execute(sa.insert(budgets).values(**{f: getattr(budget, f) for f in budget.__struct_fields__}))
            await self._record(conn, actor=actor, tenant_id=tenant_id, action="budget.create", object_type="budget",
                               object_id=budget.id, detail=_detail(budget), at=now)
        return budget

    async def get_budget(self, tenant_id: str, budget_id: str) -> Budget:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(budgets).where(
                budgets.c.tenant_id == tenant_id, budgets.c.id == budget_id))).first()
        if row is None:
            raise NotFound("budget", budget_id, tenant_id)
        return budget_from_row(row)

    async def list_budgets(self, tenant_id: str) -> list[Budget]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(budgets).where(budgets.c.tenant_id == tenant_id)
                                       .order_by(budgets.c.created_at, budgets.c.id))).all()
        return [budget_from_row(r) for r in rows]

    async def update_budget(
        self, tenant_id: str, budget_id: str, *, amount: Any = None, mode: str | None = None, actor: str
    ) -> Budget:
        """Change the amount and/or the mode. The counter (and what it has counted) stays."""
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
            before = (await conn.execute(sa.select(budgets).where(*where))).first()
            if before is None:
                raise NotFound("budget", budget_id, tenant_id)
            await conn.execute(sa.update(budgets).where(*where).values(**changes, updated_at=now))
            await self._record(conn, actor=actor, tenant_id=tenant_id, action="budget.update", object_type="budget",
                               object_id=budget_id, at=now,
                               detail={"before": {k: getattr(before, k) for k in changes}, "after": changes})
            row = (await conn.execute(sa.select(budgets).where(*where))).first()
        return budget_from_row(row)

    async def delete_budget(self, tenant_id: str, budget_id: str, *, actor: str) -> Budget:
        """Remove the limit; returns what was deleted."""
        where = (budgets.c.tenant_id == tenant_id, budgets.c.id == budget_id)
        async with self._write() as conn:
            row = (await conn.execute(sa.select(budgets).where(*where))).first()
            if row is None:
                raise NotFound("budget", budget_id, tenant_id)
            gone = budget_from_row(row)
            await conn.execute(sa.delete(budgets).where(*where))
            await self._record(conn, actor=actor, tenant_id=tenant_id, action="budget.delete", object_type="budget",
                               object_id=budget_id, detail=_detail(gone))
        return gone
