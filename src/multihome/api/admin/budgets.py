"""Admin resource: budgets, spending limits on a tenant, its teams and its API keys, with what is
spent against each one. A change is stored (and bumps the state version); this replica applies it
before answering, every other one within `storage.refresh_s`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any

import msgspec

from ...metering.periods import period
from ...metering.prices import NANOS, text, to_nanos
from ...metering.rules import AdminBudget, BudgetSpec, admin_budget, budget_base
from ...schema.errors import ApiError, echo
from ...schema.principal import ORG_ADMIN, TENANT_ADMIN, Principal
from ...storage.budgets import Outranked, budget_amount, budget_currency
from ...storage.errors import Invalid, NotFound
from ...storage.key_roles import PrivilegedKey
from ...storage.rows import Unreadable
from . import bodies as B
from .keys import privileged_key
from .rbac import READ, WRITE
from .route import AdminCall, Needs, Route, Services, deleted, listing, unreadable_row
from .tenancy import T

P = T + "/{tenant}/budgets"


async def list_budgets(s: Services, c: AdminCall) -> Any:
    tenant, limiter = c.tenant, s.metering.limiter
    rules, stored = limiter.rules, s.metering.admin_budgets  # the ones enforced now, read together
    asked = [("tenant", tenant)] + [(name, c.query[name]) for name in ("team", "key") if c.query.get(name)]
    rows = [(b.scope, b.id, b.rule, True) for scope, ident in asked for b in rules.budgets_for(scope, ident, tenant)]
    listed = {id(rule) for _, _, rule, _ in rows}
    for b in stored:  # admin-set budgets not listed above: other teams and keys, or outranked
        if b.tenant_id == tenant and id(b) not in listed and (len(asked) == 1 or (b.scope, b.id) in asked):
            rows.append((b.scope, b.id, b, _winner(rules, tenant, b.scope, b.id, b.period, b.currency) is b))
    # Budgets whose stored row cannot be read are not enforced (their tenant is refused instead): reported.
    stored_rows = await s.store.list_budgets(tenant) if s.store is not None else None
    listed_rows = await _status(s, tenant, rows)
    setters = {b.id: b.set_by_role for b in stored_rows} if stored_rows is not None else {}
    for row in listed_rows:  # who may change it, as a policy says (None: a config budget, the operator's)
        row["set_by_role"] = setters.get(row["id"], "org-admin") if row["id"] is not None else None
    return listing(listed_rows, stored_rows.unreadable if stored_rows is not None else ())


async def create_budget(s: Services, c: AdminCall) -> Any:
    body: B.CreateBudget = c.body
    tenant = c.tenant
    if body.scope == "tenant":
        if body.scope_id not in (None, tenant):
            raise ApiError(
                400,
                f"scope_id must be the tenant id {tenant} (or be left out) for scope tenant.",
                param="scope_id",
                code="invalid_value",
            )
    elif not body.scope_id:
        kinds = "teams" if body.scope == "team" else "API keys"
        raise ApiError(
            400,
            f"scope_id is required for scope {body.scope}: the id of one of tenant {tenant}'s {kinds}.",
            param="scope_id",
            code="invalid_value",
        )
    amount = _field(budget_amount, body.amount, "amount")
    currency = _field(budget_currency, body.currency, "currency")
    try:
        record = await s.store.create_budget(
            tenant,
            scope=body.scope,
            scope_id=body.scope_id or tenant,
            amount=amount,
            currency=currency,
            period=body.period,
            mode=body.mode,
            actor=c.who.subject,
            role=_role(c.who),
        )
    except PrivilegedKey as exc:  # checked in the write (storage/budgets.py), as update and delete are
        raise privileged_key(exc.key_id, exc.roles, "set a budget or policy on", "scope_id") from None
    except NotFound as exc:
        if exc.kind == "tenant":
            raise
        kind = "API key" if exc.kind == "api key" else exc.kind
        raise ApiError(
            404,
            f"Tenant {echo(tenant)} has no {kind} {echo(exc.id)}: a {body.scope} budget's scope_id must be one of its {kind}s.",
            param="scope_id",
            code="not_found",
        ) from None
    return _view(record)


async def get_budget(s: Services, c: AdminCall) -> Any:
    record = await s.store.get_budget(c.tenant, c.params["id"])
    rules = s.metering.limiter.rules
    winner = _winner(rules, c.tenant, record.scope, record.scope_id, record.period, record.currency)
    in_force = isinstance(winner, AdminBudget) and winner.budget_id == record.id  # as this replica enforces now
    [status] = await _status(s, c.tenant, [(record.scope, record.scope_id, admin_budget(record), in_force)])
    return {**_view(record), **status}


async def update_budget(s: Services, c: AdminCall) -> Any:
    body: B.UpdateBudget = c.body
    if body.amount is None and body.mode is None:
        raise ApiError(400, "Nothing to change: send amount and/or mode.", param="amount", code="invalid_value")
    amount = _field(budget_amount, body.amount, "amount") if body.amount is not None else None
    try:
        done = await s.store.update_budget(
            c.tenant, c.params["id"], amount=amount, mode=body.mode, actor=c.who.subject, role=_role(c.who)
        )
        return unreadable_row(done) if isinstance(done, Unreadable) else _view(done)
    except Outranked as exc:
        raise _outranked(exc, "mode" if body.mode == "soft" and body.amount is None else "amount") from None


async def delete_budget(s: Services, c: AdminCall) -> Any:
    try:
        await s.store.delete_budget(c.tenant, c.params["id"], actor=c.who.subject, role=_role(c.who))
    except Outranked as exc:
        raise _outranked(exc, None) from None
    return deleted(c.params["id"], "budget")


async def _status(s: Services, tenant: str, rows: list[Any]) -> list[dict[str, Any]]:
    """rows: (scope, id, rule, in_force) of `tenant` -> what its counters say, in the list's shape."""
    limiter = s.metering.limiter
    now = limiter.clock()
    prefix = limiter.rules.prefix
    bases = [budget_base(prefix, scope, ident, tenant, r.period, r.currency) for scope, ident, r, _ in rows]
    # In-process counters a drop left out (metering/budget_bound.py) are read back from the stored usage first.
    specs = [
        BudgetSpec(base, scope, ident, 0, False, r.period, r.currency, r)
        for base, (scope, ident, r, _) in zip(bases, rows)
        if ident != "*"  # (a "*" rule's own row names no caller)
    ]
    await limiter.read_back(specs, tenant)
    keys = [base + period(r.period, now).bucket for base, (_, _, r, _) in zip(bases, rows)]
    try:
        used = await limiter.counters.read(keys, int(now * 1000))
    except Exception:  # Redis unreachable
        raise ApiError(
            503,
            "Budget counters cannot be read right now; retry shortly.",
            type="server_error",
            code="limits_unavailable",
        ) from None
    out = []
    for (scope, ident, rule, in_force), value in zip(rows, used, strict=True):
        ends = period(rule.period, now).end
        admin = isinstance(rule, AdminBudget)
        out.append(
            {
                "object": "budget",
                "id": rule.budget_id if admin else None,
                "source": "admin" if admin else "config",
                "scope": scope,
                "scope_id": ident,
                "period": rule.period,
                "mode": rule.mode,
                "currency": rule.currency,
                "amount": text(rule.limit),
                "in_force": in_force,
                "spent_or_reserved": text(Decimal(value) / NANOS),
                "remaining": text(max(Decimal(0), Decimal(to_nanos(rule.limit) - value) / NANOS)),
                "resets_at": ends.isoformat() if ends else None,
            }
        )
    return out


def _role(who: Principal) -> str:
    """The role a budget change is made with (authorize let only these two write)."""
    return ORG_ADMIN if ORG_ADMIN in who.roles else TENANT_ADMIN


def _outranked(exc: Outranked, param: str | None) -> ApiError:
    return ApiError(403, str(exc), type="permission_error", param=param, code="budget_set_by_org_admin")


def _winner(rules: Any, tenant: str, scope: str, ident: str, period_: str, currency: str) -> Any:
    """The rule this replica enforces on `tenant`'s counter (scope, ident, period, currency), if any."""
    found = (s.rule for s in rules.budgets_for(scope, ident, tenant) if (s.period, s.currency) == (period_, currency))
    return next(found, None)


def _view(record: Any) -> dict[str, Any]:
    return {"object": "budget", **msgspec.to_builtins(record), "source": "admin"}


def _field(check: Any, value: Any, name: str) -> Any:
    try:
        return check(value)
    except Invalid as exc:
        message = str(exc)
        raise ApiError(400, f"{message[0].upper()}{message[1:]}.", param=name, code="invalid_value") from None


_NEEDS = Needs(lambda s: s.store, "Budgets set through the admin API need storage: set storage.url in the config.")
_route = partial(
    Route,
    noun="budget",
    needs=_NEEDS,
    choices={"scope": "tenant, team, key", "period": "day, month, total", "mode": "hard, soft"},
)
ROUTES = (
    _route(
        "GET",
        P,
        READ,
        list_budgets,
        "Budgets that apply in the tenant, from config and from this API, with what "
        "is spent or reserved now (?team=&key= narrow to those and the tenant's own)",
        query=("team", "key"),
        needs=None,
        tenant_must_exist=True,
    ),
    _route(
        "POST",
        P,
        WRITE,
        create_budget,
        "Set a budget on the tenant, one of its teams or one of its API keys",
        B.CreateBudget,
        status=201,
        event="budget.create",
    ),
    _route("GET", P + "/{id}", READ, get_budget, "A budget set through this API, with what is spent or reserved now"),
    _route(
        "PATCH",
        P + "/{id}",
        WRITE,
        update_budget,
        "Change a budget's amount and/or mode; what was spent is kept",
        B.UpdateBudget,
        event="budget.update",
    ),
    _route(
        "DELETE",
        P + "/{id}",
        WRITE,
        delete_budget,
        "Remove a budget: calls are no longer limited by it",
        event="budget.delete",
    ),
)
