"""Admin API for budgets, `/admin/v1/tenants/{t}/budgets...`: set, change and remove spending limits
on a tenant, its teams and its API keys, and see what is spent against each one.

    GET    .../budgets          config and admin-set budgets with spent_or_reserved and remaining (?team=&key=)
    POST   .../budgets          create (one budget per scope, scope_id, period and currency)
    GET    .../budgets/{id}     one admin-set budget with its status
    PATCH  .../budgets/{id}     change amount and/or mode; the counter, and what it counted, stays
    DELETE .../budgets/{id}     remove the limit

Mount by wrapping the admin handler: `admin = BudgetAdminRoutes(metering, store, after_change, fallback=admin)`.
A change is stored (and bumps the state version); this replica applies it before answering
(`after_change`), every other one within `storage.refresh_s`.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from ..schema.principal import ORG_ADMIN, TENANT_ADMIN, Principal
from ..metering.periods import period
from ..metering.prices import NANOS, text, to_nanos
from ..metering.rules import AdminBudget, admin_budget
from ..schema.errors import ApiError
from ..storage.budgets import Outranked, budget_amount, budget_currency
from ..storage.errors import Invalid, NotFound
from . import admin_bodies as B
from .admin_rbac import READ, WRITE, authorize
from .admin_link import AdminLink
from .admin_routes import _r

P = "/admin/v1/tenants/{tenant}/budgets"
ROUTES = [
    _r("GET", P, READ, "list_budgets", "Budgets that apply in the tenant, from config and from this API, with what is "
       "spent or reserved now (?team=&key= narrow to those and the tenant's own)", query=("team", "key")),
    _r("POST", P, WRITE, "create_budget", "Set a budget on the tenant, one of its teams or one of its API keys",
       B.CreateBudget),
    _r("GET", P + "/{id}", READ, "get_budget", "A budget set through this API, with what is spent or reserved now"),
    _r("PATCH", P + "/{id}", WRITE, "update_budget", "Change a budget's amount and/or mode; what was spent is kept",
       B.UpdateBudget),
    _r("DELETE", P + "/{id}", WRITE, "delete_budget", "Remove a budget: calls are no longer limited by it"),
]


class BudgetAdminRoutes(AdminLink):
    routes = ROUTES
    noun = "budget"
    needs_storage = "Budgets set through the admin API need storage"
    choices = {"scope": "tenant, team, key", "period": "day, month, total", "mode": "hard, soft"}
    without_storage = frozenset({"list_budgets"})

    def __init__(self, metering, store, after_change=None, fallback=None) -> None:
        super().__init__(store, after_change, fallback)
        self.metering = metering

    def authorize(self, principal: Principal, route, params) -> None:
        authorize(principal, route.action, params["tenant"])

    # -- handlers: (principal, path params, body, query) -> (status, json-able) -----------------------
    async def list_budgets(self, who, p, body, q):
        tenant, limiter = p["tenant"], self.metering.limiter
        rules, stored = limiter.rules, self.metering.admin_budgets  # the ones enforced now, read together
        asked = [("tenant", tenant)] + [(name, q[name]) for name in ("team", "key") if q.get(name)]
        rows = [(s.scope, s.id, s.rule, True) for scope, ident in asked for s in rules.budgets_for(scope, ident)]
        listed = {id(rule) for _, _, rule, _ in rows}
        for b in stored:  # admin-set budgets not listed above: other teams and keys, or outranked
            if b.tenant_id == tenant and id(b) not in listed and (len(asked) == 1 or (b.scope, b.id) in asked):
                rows.append((b.scope, b.id, b, _winner(rules, b.scope, b.id, b.period, b.currency) is b))
        return 200, {"object": "list", "data": await self._status(rows)}

    async def create_budget(self, who, p, body: B.CreateBudget, q):
        tenant = p["tenant"]
        if body.scope == "tenant":
            if body.scope_id not in (None, tenant):
                raise ApiError(400, f"scope_id must be the tenant id {tenant} (or be left out) for scope tenant.",
                               param="scope_id", code="invalid_value")
        elif not body.scope_id:
            kinds = "teams" if body.scope == "team" else "API keys"
            raise ApiError(400, f"scope_id is required for scope {body.scope}: the id of one of tenant {tenant}'s "
                           f"{kinds}.", param="scope_id", code="invalid_value")
        amount = _field(budget_amount, body.amount, "amount")
        currency = _field(budget_currency, body.currency, "currency")
        try:
            record = await self.store.create_budget(
                tenant, scope=body.scope, scope_id=body.scope_id or tenant, amount=amount, currency=currency,
                period=body.period, mode=body.mode, actor=who.subject, role=_role(who))
        except NotFound as exc:
            if exc.kind == "tenant":
                raise
            kind = "API key" if exc.kind == "api key" else exc.kind
            raise ApiError(404, f"Tenant {tenant} has no {kind} {exc.id}: a {body.scope} budget's scope_id must "
                           f"be one of its {kind}s.", param="scope_id", code="not_found") from None
        return 201, _view(record)

    async def get_budget(self, who, p, body, q):
        record = await self.store.get_budget(p["tenant"], p["id"])
        winner = _winner(self.metering.limiter.rules, record.scope, record.scope_id, record.period, record.currency)
        in_force = isinstance(winner, AdminBudget) and winner.budget_id == record.id  # as this replica enforces now
        [status] = await self._status([(record.scope, record.scope_id, admin_budget(record), in_force)])
        return 200, {**_view(record), **status}

    async def update_budget(self, who, p, body: B.UpdateBudget, q):
        if body.amount is None and body.mode is None:
            raise ApiError(400, "Nothing to change: send amount and/or mode.", param="amount", code="invalid_value")
        amount = _field(budget_amount, body.amount, "amount") if body.amount is not None else None
        try:
            return 200, _view(await self.store.update_budget(p["tenant"], p["id"], amount=amount, mode=body.mode,
                                                             actor=who.subject, role=_role(who)))
        except Outranked as exc:
            raise _outranked(exc, "mode" if body.mode == "soft" and body.amount is None else "amount") from None

    async def delete_budget(self, who, p, body, q):
        try:
            await self.store.delete_budget(p["tenant"], p["id"], actor=who.subject, role=_role(who))
        except Outranked as exc:
            raise _outranked(exc, None) from None
        return 200, {"id": p["id"], "object": "budget.deleted", "deleted": True}

    async def _status(self, rows) -> list[dict]:
        """rows: (scope, id, rule, in_force) -> what the counters say, in the list's shape."""
        limiter = self.metering.limiter
        now = limiter.clock()
        prefix = limiter.rules.prefix
        keys = [f"{prefix}b:{scope}:{ident}:{r.period}:{r.currency}:{period(r.period, now).bucket}"
                for scope, ident, r, _ in rows]
        try:
            used = await limiter.counters.read(keys, int(now * 1000))
        except Exception:  # Redis unreachable
            raise ApiError(503, "Budget counters cannot be read right now; retry shortly.", type="server_error",
                           code="limits_unavailable") from None
        out = []
        for (scope, ident, rule, in_force), value in zip(rows, used):
            ends = period(rule.period, now).end
            admin = isinstance(rule, AdminBudget)
            out.append({
                "object": "budget", "id": rule.budget_id if admin else None, "source": "admin" if admin else "config",
                "scope": scope, "scope_id": ident, "period": rule.period, "mode": rule.mode, "currency": rule.currency,
                "amount": text(rule.limit), "in_force": in_force,
                "spent_or_reserved": text(Decimal(value) / NANOS),
                "remaining": text(max(Decimal(0), Decimal(to_nanos(rule.limit) - value) / NANOS)),
                "resets_at": ends.isoformat() if ends else None,
            })
        return out


def _role(who: Principal) -> str:
    """The role a budget change is made with (authorize let only these two write)."""
    return ORG_ADMIN if ORG_ADMIN in who.roles else TENANT_ADMIN


def _outranked(exc: Outranked, param: str | None) -> ApiError:
    return ApiError(403, str(exc), type="permission_error", param=param, code="budget_set_by_org_admin")


def _winner(rules, scope: str, ident: str, period_: str, currency: str):
    """The rule this replica enforces on the counter (scope, ident, period, currency), if any."""
    found = (s.rule for s in rules.budgets_for(scope, ident) if (s.period, s.currency) == (period_, currency))
    return next(found, None)


def _view(record) -> dict:
    return {"object": "budget", **msgspec.to_builtins(record), "source": "admin"}


def _field(check, value, name: str):
    try:
        return check(value)
    except Invalid as exc:
        message = str(exc)
        raise ApiError(400, f"{message[0].upper()}{message[1:]}.", param=name, code="invalid_value") from None
