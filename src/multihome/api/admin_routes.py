"""The admin API, `/admin/v1/...`: tenants, teams, keys, policies, entitlements, admin events,
and policy explain. Every route is checked against the RBAC table first; every change is stored
with the actor as an admin event (the audit trail takes these over)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

import msgspec

from ..schema.principal import ROLES, Principal
from ..policy.model import Policy as EnginePolicy
from ..policy.model import policy_problems
from ..schema.decoding import decode_body
from ..schema.errors import ApiError
from ..storage.apikeys import KEY_MAX_LIFETIME_DAYS
from ..storage.errors import Conflict, Invalid, NotFound
from . import admin_bodies as B
from .admin_rbac import AUDIT, ORG, READ, WRITE, authorize
from .asgi import JSON, read_body, send_bytes
from .policy_gate import EGRESS, PolicyGate

_encode = msgspec.json.encode
_WHOLE = re.compile(r"[+-]?[0-9]{1,20}")  # bounded before int(): no 100 000-digit conversions
MAX_PAGE = 1000
_PROBLEM_PATH = re.compile(r"^policy new\.(\S+?)(?::|\s)")
Handler = Callable[..., Awaitable[tuple[int, object]]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern
    action: str
    handler: str
    summary: str
    body: type | None = None
    query: tuple[str, ...] = ()  # query parameters, for the OpenAPI document


def _r(method, path, action, handler, summary, body=None, query=()) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_\\-]+)", path)
    return Route(method, re.compile(f"^{regex}$"), action, handler, summary, body, tuple(query))


P = "/admin/v1"
ROUTES = [
    _r("GET", f"{P}/whoami", "any", "whoami", "The caller's identity and roles"),
    _r("GET", f"{P}/tenants", "list-tenants", "list_tenants", "List tenants (org-admin: all; others: their own)"),
    _r("POST", f"{P}/tenants", ORG, "create_tenant", "Create a tenant", B.CreateTenant),
    _r("GET", f"{P}/tenants/{{tenant}}", READ, "get_tenant", "Get a tenant"),
    _r("DELETE", f"{P}/tenants/{{tenant}}", ORG, "delete_tenant", "Delete a tenant and everything in it"),
    _r("GET", f"{P}/tenants/{{tenant}}/teams", READ, "list_teams", "List teams"),
    _r("POST", f"{P}/tenants/{{tenant}}/teams", WRITE, "create_team", "Create a team", B.CreateTeam),
    _r("GET", f"{P}/tenants/{{tenant}}/teams/{{id}}", READ, "get_team", "Get a team"),
    _r("DELETE", f"{P}/tenants/{{tenant}}/teams/{{id}}", WRITE, "delete_team", "Delete a team"),
    _r("GET", f"{P}/tenants/{{tenant}}/keys", READ, "list_keys", "List API keys (never their secrets)"),
    _r("POST", f"{P}/tenants/{{tenant}}/keys", WRITE, "create_key", "Create an API key; the secret is shown once", B.CreateKey),
    _r("GET", f"{P}/tenants/{{tenant}}/keys/{{id}}", READ, "get_key", "Get an API key"),
    _r("DELETE", f"{P}/tenants/{{tenant}}/keys/{{id}}", WRITE, "revoke_key", "Revoke an API key (every replica within a second)"),
    _r("GET", f"{P}/tenants/{{tenant}}/policies", READ, "list_policies", "List egress/residency policies"),
    _r("POST", f"{P}/tenants/{{tenant}}/policies", WRITE, "create_policy", "Create a policy", B.CreatePolicy),
    _r("GET", f"{P}/tenants/{{tenant}}/policies/{{id}}", READ, "get_policy", "Get a policy"),
    _r("PATCH", f"{P}/tenants/{{tenant}}/policies/{{id}}", WRITE, "update_policy", "Change a policy", B.UpdatePolicy),
    _r("DELETE", f"{P}/tenants/{{tenant}}/policies/{{id}}", WRITE, "delete_policy", "Delete a policy"),
    _r("GET", f"{P}/tenants/{{tenant}}/entitlements", READ, "list_entitlements", "List model entitlements"),
    _r("POST", f"{P}/tenants/{{tenant}}/entitlements", ORG, "grant_entitlement", "Grant a time-bound model licence", B.GrantEntitlement),
    _r("GET", f"{P}/tenants/{{tenant}}/entitlements/{{id}}", READ, "get_entitlement", "Get an entitlement"),
    _r("DELETE", f"{P}/tenants/{{tenant}}/entitlements/{{id}}", ORG, "revoke_entitlement", "Revoke an entitlement"),
    _r("GET", f"{P}/tenants/{{tenant}}/events", AUDIT, "tenant_events", "Admin changes in this tenant, oldest first "
       "(?limit= 1-1000, default 100; ?after=<seq of the last event seen>)", query=("limit", "after")),
    _r("GET", f"{P}/events", ORG, "all_events", "Admin changes in the whole organisation, oldest first "
       "(?limit= 1-1000, default 100; ?after=<seq of the last event seen>)", query=("limit", "after")),
    _r("POST", f"{P}/policy/explain", "explain", "explain", "The policy decision for a caller and model, rule by rule", B.ExplainPolicy),
]


def _list(items) -> dict:
    return {"object": "list", "data": items}


class AdminRoutes:
    def __init__(self, store, gate: PolicyGate, model_groups: frozenset[str], after_change=None) -> None:
        self.store = store
        self.gate = gate
        self.model_groups = model_groups
        # Called after every successful change so this replica applies it before answering;
        # other replicas pick it up within storage.refresh_s.
        self.after_change = after_change

    async def handle(self, scope, receive, send, request_id: bytes, principal: Principal) -> None:
        path, method = scope["path"], scope["method"]
        found = match_route(ROUTES, method, path)
        if found is None:
            raise ApiError(404, f"Unknown admin endpoint {method} {path}. See GET /admin/v1/openapi.json.", code="unknown_url")
        route, params = found
        tenant = params.get("tenant")
        if route.action == "list-tenants" or route.action == "any":
            pass  # filtered inside the handler
        elif route.action == "explain":
            pass  # authorized on the body's tenant
        else:
            authorize(principal, route.action, tenant)
        body = None
        if route.body is not None:
            raw = await read_body(scope, receive, 1 << 20)
            body = decode_body(raw, route.body)
        query = parse_qs(scope.get("query_string", b"").decode())
        if self.store is None and route.handler not in ("whoami", "explain"):
            raise ApiError(501, "The admin API needs storage: set storage.url in the config.", code="storage_not_configured")
        try:
            status, out = await getattr(self, route.handler)(principal, params, body, query)
        except NotFound as exc:
            raise ApiError(404, str(exc), code="not_found") from None
        except Conflict as exc:
            raise ApiError(409, str(exc), code="conflict") from None
        except Invalid as exc:
            raise ApiError(400, str(exc), param=exc.field, code="invalid_value") from None
        if route.method != "GET" and route.handler != "explain" and self.after_change is not None:
            await self.after_change()
        await send_bytes(send, status, _encode(out), [JSON, (b"x-request-id", request_id)])

    # -- handlers: (principal, path params, body, query) -> (status, json-able) -------------------
    async def whoami(self, who, p, body, q):
        return 200, {"object": "principal", **msgspec.to_builtins(who)}

    async def list_tenants(self, who, p, body, q):
        tenants = await self.store.list_tenants()
        if "org-admin" not in who.roles:
            tenants = [t for t in tenants if t.id == who.tenant]
        return 200, _list(tenants)

    async def create_tenant(self, who, p, body: B.CreateTenant, q):
        return 201, await self.store.create_tenant(body.name, metadata=body.metadata, actor=who.subject)

    async def get_tenant(self, who, p, body, q):
        return 200, await self.store.get_tenant(p["tenant"])

    async def delete_tenant(self, who, p, body, q):
        await self.store.delete_tenant(p["tenant"], actor=who.subject)
        return 200, {"id": p["tenant"], "object": "tenant.deleted", "deleted": True}

    async def list_teams(self, who, p, body, q):
        return 200, _list(await self.store.list_teams(p["tenant"]))

    async def create_team(self, who, p, body: B.CreateTeam, q):
        return 201, await self.store.create_team(p["tenant"], body.name, actor=who.subject)

    async def get_team(self, who, p, body, q):
        return 200, await self.store.get_team(p["tenant"], p["id"])

    async def delete_team(self, who, p, body, q):
        await self.store.delete_team(p["tenant"], p["id"], actor=who.subject)
        return 200, {"id": p["id"], "object": "team.deleted", "deleted": True}

    async def list_keys(self, who, p, body, q):
        return 200, _list([B.key_view(k) for k in await self.store.list_keys(p["tenant"])])

    async def create_key(self, who, p, body: B.CreateKey, q):
        unknown = [r for r in body.roles if r not in ROLES]
        if unknown:
            raise ApiError(400, f"Unknown role {unknown[0]}; roles are {', '.join(ROLES)}.", param="roles")
        if "org-admin" in body.roles and "org-admin" not in who.roles:
            raise ApiError(403, "Only an org-admin can issue org-admin keys.", type="permission_error", code="insufficient_role")
        if body.scopes_models:
            missing = sorted(set(body.scopes_models) - self.model_groups)
            if missing:
                raise ApiError(400, f"scopes_models names unknown model groups: {', '.join(missing)}.", param="scopes_models")
        expires_at = body.expires_at
        if body.expires_in_days is not None:
            if expires_at is not None:
                raise ApiError(400, "Send expires_at or expires_in_days, not both.", param="expires_in_days",
                               code="invalid_value")
            if not 0 < body.expires_in_days <= KEY_MAX_LIFETIME_DAYS:
                raise ApiError(400, f"expires_in_days must be more than 0 and at most {KEY_MAX_LIFETIME_DAYS} (100 "
                               "years); leave it out for a key that does not expire.", param="expires_in_days",
                               code="invalid_value")
            expires_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=body.expires_in_days)
        record, secret = await self.store.create_key(
            p["tenant"], name=body.name, team_id=body.team_id, roles=body.roles, scopes_models=body.scopes_models,
            scopes_endpoints=body.scopes_endpoints, expires_at=expires_at, metadata=body.metadata, actor=who.subject,
        )
        return 201, B.key_view(record, secret)

    async def get_key(self, who, p, body, q):
        return 200, B.key_view(await self.store.get_key(p["tenant"], p["id"]))

    async def revoke_key(self, who, p, body, q):
        return 200, B.key_view(await self.store.revoke_key(p["tenant"], p["id"], actor=who.subject))

    async def list_policies(self, who, p, body, q):
        return 200, _list(await self.store.list_policies(p["tenant"]))

    async def create_policy(self, who, p, body: B.CreatePolicy, q):
        scope_id = body.scope_id if body.scope != "tenant" else (body.scope_id or p["tenant"])
        _check_rules(p["tenant"], body.scope, scope_id, body.rules)
        rules = {EGRESS: msgspec.to_builtins(body.rules)}
        return 201, await self.store.create_policy(
            p["tenant"], scope=body.scope, scope_id=scope_id, rules=rules, description=body.description, actor=who.subject
        )

    async def get_policy(self, who, p, body, q):
        return 200, await self.store.get_policy(p["tenant"], p["id"])

    async def update_policy(self, who, p, body: B.UpdatePolicy, q):
        rules = None
        if body.rules is not None:
            current = await self.store.get_policy(p["tenant"], p["id"])
            _check_rules(p["tenant"], current.scope, current.scope_id, body.rules)
            rules = {**current.rules, EGRESS: msgspec.to_builtins(body.rules)}
        return 200, await self.store.update_policy(
            p["tenant"], p["id"], rules=rules, description=body.description, actor=who.subject
        )

    async def delete_policy(self, who, p, body, q):
        await self.store.delete_policy(p["tenant"], p["id"], actor=who.subject)
        return 200, {"id": p["id"], "object": "policy.deleted", "deleted": True}

    async def list_entitlements(self, who, p, body, q):
        return 200, _list(await self.store.list_entitlements(p["tenant"], include_revoked=True))

    async def grant_entitlement(self, who, p, body: B.GrantEntitlement, q):
        return 201, await self.store.grant_entitlement(
            p["tenant"], model_group=body.model_group, starts_on=body.starts_on, ends_on=body.ends_on,
            exclusive=body.exclusive, note=body.note, actor=who.subject,
        )

    async def get_entitlement(self, who, p, body, q):
        return 200, await self.store.get_entitlement(p["tenant"], p["id"])

    async def revoke_entitlement(self, who, p, body, q):
        return 200, await self.store.revoke_entitlement(p["tenant"], p["id"], actor=who.subject)

    async def tenant_events(self, who, p, body, q):
        return 200, _list(await self.store.admin_events(p["tenant"], **_page(q)))

    async def all_events(self, who, p, body, q):
        return 200, _list(await self.store.admin_events(None, **_page(q)))

    async def explain(self, who, p, body: B.ExplainPolicy, q):
        authorize(who, READ, body.tenant_id)
        if body.model not in self.model_groups:
            raise ApiError(404, f"Unknown model group '{body.model}'.", param="model", code="model_not_found")
        subject = Principal(tenant=body.tenant_id, subject="explain", source="explain", team=body.team_id,
                            roles=frozenset(body.roles or ["member"]))
        if body.key_id is not None and self.store is not None:
            from ..identity.authenticator import principal_of_key

            subject = principal_of_key(await self.store.get_key(body.tenant_id, body.key_id))
        decision = self.gate.decide(subject, body.model, body.endpoint, body.on)
        return 200, {"object": "policy.explanation", "model": body.model, "tenant_id": body.tenant_id, **decision.to_dict()}


def _check_rules(tenant: str, scope: str, scope_id: str | None, rules) -> None:
    problems = policy_problems(EnginePolicy(id="new", tenant_id=tenant, scope=scope, scope_id=scope_id, rules=rules))
    if problems:
        where = _PROBLEM_PATH.match(problems[0])  # "policy new.rules[0].regions[1]: ..." -> param rules[0].regions[1]
        raise ApiError(400, "Invalid policy: " + "; ".join(problems[:5]), param=where.group(1) if where else "rules",
                       code="invalid_policy")


def match_route(routes, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route for (method, path) and its path parameters; 405 if only other methods match."""
    allowed = []
    for route in routes:
        m = route.pattern.match(path)
        if m:
            if route.method == method:
                return route, m.groupdict()
            allowed.append(route.method)
    if allowed:
        raise ApiError(405, f"Method {method} is not allowed on {path}; use {' or '.join(allowed)}.", code="method_not_allowed")
    return None


def _page(q) -> dict:
    """?limit= (1-1000, default 100) and ?after= (the seq of the last event seen) of an events list."""
    return {"limit": query_int(q, "limit", 1, MAX_PAGE, 100), "after": query_int(q, "after", 0, 2**63 - 1)}


def query_int(q, name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    """A whole-number query parameter from lo to hi (its last value), else 400 saying so."""
    values = q.get(name)
    if not values:
        return default
    text = values[-1] if isinstance(values, list) else values
    if not _WHOLE.fullmatch(text) or not lo <= int(text) <= hi:
        raise ApiError(400, f"Query parameter '{name}' must be a whole number from {lo} to {hi}.", param=name,
                       code="invalid_value")
    return int(text)
