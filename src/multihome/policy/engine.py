"""One decision per request: key scopes, exclusivity, entitlement, egress, with the reasons.

`PolicyEngine.decide` serves real calls and explain alike: the trace it returns is the
evaluation that decided. An engine is immutable and built once per data version
(`from_rows`); a change in policies or entitlements means building a new engine, which also
drops the decision cache.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from ..schema.principal import Principal
from .egress import CompiledPolicy, PolicyResult, RuleTrace, compile_policy, compose
from .entitlements import check_entitlement, check_exclusive
from .model import (
    KEY,
    TEAM,
    TENANT,
    DeploymentFacts,
    Entitlement,
    Policy,
    entitlement_problems,
    glob_matches,
    policy_problems,
)

MODEL_NOT_IN_KEY_SCOPE = "model_not_in_key_scope"
ENDPOINT_NOT_IN_KEY_SCOPE = "endpoint_not_in_key_scope"
EGRESS_DENIED = "egress_denied"
POLICY_UNAVAILABLE = "policy_unavailable"


class Decision(msgspec.Struct, frozen=True):
    """Shared between callers through the cache: treat `denied` and `trace` as read-only."""

    allowed: bool
    deployments: frozenset[str]  # the allow-set for the planner; empty when refused
    denied: dict[str, str]  # deployment -> why egress policy excluded it (also filled when refused for another reason)
    code: str | None = None
    message: str = ""
    trace: list[RuleTrace] = []
    entitlement_id: str | None = None  # the grant that licensed the call (or that the refusal names)

    def to_dict(self) -> dict:
        out = msgspec.to_builtins(self)
        out["deployments"] = sorted(self.deployments)
        return out


class Snapshot:
    """Policies and entitlements indexed for the hot path; immutable once built."""

    def __init__(
        self,
        policies: dict[tuple[str, str, str], list[CompiledPolicy]],
        entitlements: dict[str, list[Entitlement]],
        exclusive: list[Entitlement],
        licensed_groups: frozenset[str],
        quarantined: dict[str, list[str]],
        unreadable_grants: tuple[tuple[str | None, str], ...] = (),
    ) -> None:
        self.policies = policies  # (tenant, scope, scope_id) -> policies in id order
        self.entitlements = entitlements  # tenant -> its grants
        self.exclusive = exclusive  # every live exclusive grant, all tenants
        self.licensed_groups = licensed_groups
        self.quarantined = quarantined  # tenant -> problems in its rows; its calls are refused
        # (tenant, group pattern) of grants that cannot be read: each may be exclusive, so
        # its group is refused to every other tenant until it is fixed (left out, it would open the group).
        self.unreadable_grants = unreadable_grants
        # Each policy's checks and compiled form by its encoded bytes, for the next build to take unchanged
        # policies from: a change of one policy compiles that one, not every tenant's (a build runs on a
        # thread, but holds the GIL the event loop needs while it compiles).
        self.compiled: dict[bytes, _Checked] = {}

    @classmethod
    def build(
        cls,
        policies: Iterable[Policy],
        entitlements: Iterable[Entitlement],
        licensed_groups: Iterable[str],
        unreadable: dict[str, list[str]] | None = None,
        unreadable_grants: Iterable[tuple[str | None, str]] = (),
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """`unreadable`: tenant -> its stored rows that could not be read at all; refused like bad rows.
        `unreadable_grants`: (tenant, model group pattern) of grants that could not be read. `previous`: the
        snapshot this one replaces, whose policies' checks and compiled forms are taken for equal policies."""
        grants = list(unreadable_grants)
        compiled: dict[tuple[str, str, str], list[CompiledPolicy]] = {}
        by_tenant: dict[str, list[Entitlement]] = {}
        exclusive: list[Entitlement] = []
        quarantined: dict[str, list[str]] = {t: list(p) for t, p in (unreadable or {}).items()}
        before = previous.compiled if previous is not None else {}
        checked: dict[bytes, _Checked] = {}
        for policy in sorted(policies, key=lambda p: p.id):
            key = _encode(policy)
            done = before.get(key)
            if done is None:
                problems = policy_problems(policy)
                # A policy without rules keeps everything: nothing to compile.
                done = _Checked(problems, compile_policy(policy) if policy.rules and not problems else None)
            checked[key] = done
            if done.problems:  # skipping a bad row could drop a deny: refuse the tenant's calls instead
                quarantined.setdefault(policy.tenant_id, []).extend(done.problems)
                continue
            c = done.policy
            if c is not None:
                compiled.setdefault((policy.tenant_id, c.scope, c.scope_id), []).append(c)
        for ent in entitlements:
            problems = entitlement_problems(ent)
            if problems:
                quarantined.setdefault(ent.tenant_id, []).extend(problems)
                if ent.exclusive and not ent.revoked:  # skipped, it would open its group to everyone
                    grants.append((ent.tenant_id, ent.model_group))
                continue
            by_tenant.setdefault(ent.tenant_id, []).append(ent)
            if ent.exclusive and not ent.revoked:
                exclusive.append(ent)
        snapshot = cls(compiled, by_tenant, exclusive, frozenset(licensed_groups), quarantined, tuple(grants))
        snapshot.compiled = checked
        return snapshot


class _Checked(NamedTuple):
    """A policy's problems (it is quarantined if any) and its compiled form (None: no rules, or problems)."""

    problems: list[str]
    policy: CompiledPolicy | None


_encode = msgspec.json.Encoder().encode


class PolicyEngine:
    def __init__(self, snapshot: Snapshot, *, cache_size: int = 8192, unavailable: str | None = None) -> None:
        self.snapshot = snapshot
        self._unavailable = unavailable
        self._decide = functools.lru_cache(maxsize=cache_size)(self._evaluate)
        # Second level: one policy's verdict on one group's deployments, shared by every caller the
        # policy applies to, so a new key in a known team only evaluates the key's own policies.
        self._policy_result = functools.lru_cache(maxsize=cache_size)(_evaluate_policy)

    @classmethod
    def from_rows(
        cls,
        policies: Iterable[Policy],
        entitlements: Iterable[Entitlement],
        licensed_groups: Iterable[str],
        *,
        cache_size: int = 8192,
        unreadable: dict[str, list[str]] | None = None,
        unreadable_grants: Iterable[tuple[str | None, str]] = (),
        previous: PolicyEngine | None = None,
    ) -> PolicyEngine:
        """`previous`: the engine this one replaces; its compiled policies are reused where they are equal."""
        before = previous.snapshot if previous is not None else None
        return cls(
            Snapshot.build(policies, entitlements, licensed_groups, unreadable, unreadable_grants, before),
            cache_size=cache_size,
        )

    @classmethod
    def closed(cls, why: str) -> PolicyEngine:
        """An engine that refuses every call: for when policy data cannot be loaded at all."""
        return cls(Snapshot({}, {}, [], frozenset(), {}), cache_size=1, unavailable=why)

    def decide(
        self,
        principal: Principal,
        model_group: str,
        endpoint: str,
        deployments: Sequence[DeploymentFacts],
        today: dt.date | None = None,
    ) -> Decision:
        """Which of `deployments` (the group's) this caller may reach today (UTC), or a refusal."""
        if today is None:
            today = dt.datetime.now(dt.UTC).date()
        return self._decide(
            principal.tenant,
            principal.team,
            principal.key_id,
            principal.scopes_models,
            principal.scopes_endpoints,
            model_group,
            endpoint,
            tuple(deployments),
            today,
        )

    explain = decide  # one code path: the explanation is the decision

    def cache_info(self):
        return self._decide.cache_info()

    def _evaluate(
        self,
        tenant: str,
        team: str | None,
        key_id: str | None,
        scopes_models: frozenset[str] | None,
        scopes_endpoints: frozenset[str] | None,
        group: str,
        endpoint: str,
        deployments: tuple[DeploymentFacts, ...],
        today: dt.date,
    ) -> Decision:
        snap = self.snapshot
        if self._unavailable is not None:
            return _refuse(
                {},
                [],
                POLICY_UNAVAILABLE,
                f"Policy is unavailable ({self._unavailable}); calls are refused until it loads.",
            )
        if tenant in snap.quarantined:
            problems = snap.quarantined[tenant]
            return _refuse(
                {},
                [],
                POLICY_UNAVAILABLE,
                f"Your tenant's policy data is invalid, so calls are refused until a tenant admin fixes it: "
                f"{'; '.join(problems[:3])}.",
            )

        applicable = list(snap.policies.get((tenant, TENANT, tenant), ()))
        if team:
            applicable += snap.policies.get((tenant, TEAM, team), ())
        if key_id:
            applicable += snap.policies.get((tenant, KEY, key_id), ())
        results = [self._policy_result(p, group, deployments) for p in applicable]
        allowed, denied, trace = compose(results, deployments)

        who = f"This API key ({key_id})" if key_id else "This credential"
        if scopes_endpoints is not None and endpoint not in scopes_endpoints:
            return _refuse(
                denied,
                trace,
                ENDPOINT_NOT_IN_KEY_SCOPE,
                f"{who} may call only the {_listing(scopes_endpoints)} endpoints, not '{endpoint}'. "
                f"Ask a tenant admin for a key whose scope includes '{endpoint}'.",
            )
        if scopes_models is not None and not any(glob_matches(p, group) for p in scopes_models):
            return _refuse(
                denied,
                trace,
                MODEL_NOT_IN_KEY_SCOPE,
                f"{who} may call only the model groups {_listing(scopes_models)}, not '{group}'. "
                f"Ask a tenant admin for a key whose scope includes '{group}'.",
            )
        excl = check_exclusive(tenant, group, today, snap.exclusive)
        if not excl.ok:
            # The other tenant's grant id stays out of the decision: explain output reaches this tenant.
            return _refuse(denied, trace, excl.code, excl.message)
        if snap.unreadable_grants and _unreadable_grant_covers(snap.unreadable_grants, tenant, group):
            # Neither the other tenant nor the row is named: this message reaches this tenant.
            return _refuse(
                denied,
                trace,
                POLICY_UNAVAILABLE,
                f"A stored grant for model group '{group}' cannot be read and may license it exclusively to "
                "another tenant, so calls to it are refused until an operator fixes the row.",
            )
        ent = check_entitlement(tenant, group, today, snap.entitlements.get(tenant, []), group in snap.licensed_groups)
        if not ent.ok:
            return _refuse(denied, trace, ent.code, ent.message, ent.entitlement_id)
        if not allowed:
            if not deployments:
                why = f"model group '{group}' has no deployments."
            else:
                why = "; ".join(f"{name} is {denied[name]}" for name in (d.name for d in deployments))
            return _refuse(
                denied,
                trace,
                EGRESS_DENIED,
                f"Policy allows no deployment of model group '{group}' for this caller: {why}. "
                "Ask a tenant admin to change the policy named, or call a model group with an allowed deployment.",
                ent.entitlement_id,
            )
        return Decision(True, frozenset(allowed), denied, None, "", trace, ent.entitlement_id)


def _unreadable_grant_covers(grants: tuple[tuple[str | None, str], ...], tenant: str, group: str) -> bool:
    return any(owner != tenant and glob_matches(pattern, group) for owner, pattern in grants)


def _evaluate_policy(policy: CompiledPolicy, group: str, deployments: tuple[DeploymentFacts, ...]) -> PolicyResult:
    return policy.evaluate(group, deployments)


def _refuse(denied, trace, code, message, entitlement_id=None) -> Decision:
    return Decision(False, frozenset(), denied, code, message, trace, entitlement_id)


def _listing(values: frozenset[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"
