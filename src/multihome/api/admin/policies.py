"""Admin resource: a tenant's egress/residency policies, and `policy/explain` (the decision for a
caller and model, rule by rule).

Each policy records the role that set it: a tenant-admin adds policies of its own (they can only
narrow what the organisation's allow: policies compose by intersection, policy/egress.py) but may not
change or delete one an org-admin set (403 `policy_set_by_org_admin`)."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import msgspec

from ...policy.model import Policy as EnginePolicy
from ...policy.model import policy_problems
from ...schema.errors import ApiError, echo
from ...schema.principal import ORG_ADMIN, TENANT_ADMIN, Principal
from ...storage.errors import UnreadableRow
from ...storage.key_roles import PrivilegedKey
from ...storage.policies import PolicyOutranked
from ...storage.rows import Unreadable
from ..policy_gate import EGRESS
from ..read_only import explained_refusal
from . import bodies as B
from .keys import check_key_scope, privileged_key
from .pages import QUERY, SAYS, asked, paged
from .rbac import READ, WRITE, anyone, authorize
from .route import PREFIX, STORAGE, AdminCall, Route, Services, deleted, unreadable_row
from .tenancy import T

P = T + "/{tenant}/policies"
_PROBLEM_PATH = re.compile(r"^policy new\.(\S+?)(?::|\s)")


async def list_policies(s: Services, c: AdminCall) -> Any:
    return paged(await s.store.page_policies(c.tenant, *asked(c)))


async def create_policy(s: Services, c: AdminCall) -> Any:
    body: B.CreatePolicy = c.body
    scope_id = body.scope_id if body.scope != "tenant" else (body.scope_id or c.tenant)
    _check_rules(c.tenant, body.scope, scope_id, body.rules)
    rules = {EGRESS: msgspec.to_builtins(body.rules)}
    try:
        return await s.store.create_policy(
            c.tenant,
            scope=body.scope,
            scope_id=scope_id,
            rules=rules,
            description=body.description,
            actor=c.who.subject,
            role=_role(c.who),
        )
    except PrivilegedKey as exc:  # checked in the write (storage/key_roles.py), as a budget's
        raise privileged_key(exc.key_id, exc.roles, "set a budget or policy on", "scope_id") from None


async def get_policy(s: Services, c: AdminCall) -> Any:
    return await s.store.get_policy(c.tenant, c.params["id"])


async def update_policy(s: Services, c: AdminCall) -> Any:
    body: B.UpdatePolicy = c.body
    await _may_change(s, c, "change")
    rules = None
    if body.rules is not None:
        try:
            current = await s.store.get_policy(c.tenant, c.params["id"])
            scope, scope_id = current.scope, current.scope_id
            # Other rule kinds stay; a stored value that is not an object (hand-edited) is replaced whole.
            kept = current.rules if isinstance(current.rules, dict) else {}
        except UnreadableRow:  # the row cannot be read: its rules are replaced whole (that mends it)
            scope, scope_id = await s.store.policy_scope(c.tenant, c.params["id"])
            kept = {}
        _check_rules(c.tenant, scope, scope_id, body.rules)
        rules = {**kept, EGRESS: msgspec.to_builtins(body.rules)}
    try:
        done = await s.store.update_policy(
            c.tenant, c.params["id"], rules=rules, description=body.description, actor=c.who.subject, role=_role(c.who)
        )
    except PolicyOutranked as exc:  # an org-admin took it over since _may_change read it
        raise outranked(exc) from None
    return unreadable_row(done) if isinstance(done, Unreadable) else done


async def delete_policy(s: Services, c: AdminCall) -> Any:
    await _may_change(s, c, "delete")
    try:
        await s.store.delete_policy(c.tenant, c.params["id"], actor=c.who.subject, role=_role(c.who))
    except PolicyOutranked as exc:
        raise outranked(exc) from None
    return deleted(c.params["id"], "policy")


async def _may_change(s: Services, c: AdminCall, doing: str) -> None:
    """A policy scoped to a key holding a role the caller could not grant, or one an org-admin set, is not a
    tenant-admin's to change. Checked before the body's rules, so the answer is the 403, not a 400; the store
    checks the setter again inside its write."""
    if ORG_ADMIN not in c.who.roles:
        # 404 for none of the tenant's; read alone: the rest of the row may be what cannot be read
        scope, scope_id, setter = await s.store.policy_owner(c.tenant, c.params["id"])
        if scope == "key" and scope_id:
            await check_key_scope(s, c.who, c.tenant, scope_id)
        if setter != TENANT_ADMIN:
            raise outranked(PolicyOutranked(c.params["id"], doing))


def outranked(exc: PolicyOutranked, param: str | None = "id") -> ApiError:
    """The 403 for a tenant-admin's change to an org-admin's policy; `param` the path's policy id."""
    return ApiError(403, str(exc), type="permission_error", param=param, code="policy_set_by_org_admin")


def _role(who: Principal) -> str:
    """The role a policy is set with (authorize let only these two write)."""
    return ORG_ADMIN if ORG_ADMIN in who.roles else TENANT_ADMIN


async def explain(s: Services, c: AdminCall) -> Any:
    body: B.ExplainPolicy = c.body
    authorize(c.who, READ, body.tenant_id)  # on the body's tenant: the route has none in its path
    if body.model not in s.model_groups:
        raise ApiError(404, f"Unknown model group '{echo(body.model)}'.", param="model", code="model_not_found")
    if s.store is not None and body.tenant_id != s.static_keys_tenant:
        # A tenant id that is none (a typo, an offboarded tenant) is a 404, as on every tenant's route: no
        # caller of it can exist, so "allowed" with no policy in force would explain nothing real.
        await s.store.get_tenant(body.tenant_id)
    subject = Principal(
        tenant=body.tenant_id,
        subject="explain",
        source="explain",
        team=body.team_id,
        roles=frozenset(body.roles or ["member"]),
    )
    if body.key_id is not None and s.store is not None:
        from ...identity.authenticator import principal_of_key

        subject = principal_of_key(await s.store.get_key(body.tenant_id, body.key_id))
    decision = s.gate.decide(subject, body.model, body.endpoint, body.on).to_dict()
    refusal = explained_refusal(subject, body.endpoint, None)
    if refusal is not None:  # its role is checked before policy, as the call's; the rules stay traced
        decision.update(allowed=False, deployments=[], code=refusal.body.code, message=refusal.body.message)
    return {"object": "policy.explanation", "model": body.model, "tenant_id": body.tenant_id, **decision}


def _check_rules(tenant: str, scope: Any, scope_id: str | None, rules: list[Any]) -> None:
    problems = policy_problems(EnginePolicy(id="new", tenant_id=tenant, scope=scope, scope_id=scope_id, rules=rules))
    if problems:
        where = _PROBLEM_PATH.match(problems[0])  # "policy new.rules[0].regions[1]: ..." -> param rules[0].regions[1]
        raise ApiError(
            400,
            "Invalid policy: " + "; ".join(problems[:5]),
            param=where.group(1) if where else "rules",
            code="invalid_policy",
        )


_route = partial(Route, needs=STORAGE)
ROUTES = (
    _route(
        "GET",
        P,
        READ,
        list_policies,
        "List egress/residency policies, oldest first, " + SAYS,
        query=QUERY,
        tenant_must_exist=True,
    ),
    _route("POST", P, WRITE, create_policy, "Create a policy", B.CreatePolicy, status=201, event="policy.create"),
    _route("GET", P + "/{id}", READ, get_policy, "Get a policy"),
    _route(
        "PATCH",
        P + "/{id}",
        WRITE,
        update_policy,
        "Change a policy's rules and/or description",
        B.UpdatePolicy,
        event="policy.update",
    ),
    _route("DELETE", P + "/{id}", WRITE, delete_policy, "Delete a policy", event="policy.delete"),
    # Authorized on the body's tenant (READ) by the handler; works without storage for a described caller.
    Route(
        "POST",
        f"{PREFIX}/policy/explain",
        READ,
        explain,
        "The policy decision for a caller and model, rule by rule",
        B.ExplainPolicy,
        check=anyone,
    ),
)
