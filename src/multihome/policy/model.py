"""Policy data as storage holds it (plain JSON), and the checks every row must pass.

Unknown fields are rejected on decode: a typo such as `region:` for `regions:` would otherwise
leave that dimension unset, which means "any", and silently widen an allow rule.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from ..schema import admin_fields as fields

ALLOW, DENY = "allow", "deny"
TENANT, TEAM, KEY = "tenant", "team", "key"
SCOPES = (TENANT, TEAM, KEY)

# Rule dimensions: (field on EgressRule, what it is compared with, label used in reasons).
DIMENSIONS = (
    ("deployments", "deployment", "deployment"),
    ("providers", "provider", "provider"),
    ("provider_kinds", "provider_kind", "provider kind"),
    ("regions", "region", "region"),
    ("data_zones", "data_zone", "data zone"),
    ("model_groups", "model_group", "model group"),
)
# Compared case-insensitively ("EU" == "eu"); names (deployments, providers, groups) are exact.
CASEFOLD = frozenset({"provider_kinds", "regions", "data_zones"})


class EgressRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Matches a deployment when every listed dimension contains its value; None means any.

    Values are exact, or a prefix glob ending in one `*` ("eu-*", "gpt-4o*").
    """

    effect: Literal["allow", "deny"]
    providers: list[str] | None = None
    provider_kinds: list[str] | None = None
    regions: list[str] | None = None
    data_zones: list[str] | None = None
    deployments: list[str] | None = None
    model_groups: list[str] | None = None
    description: str | None = None


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    id: str
    tenant_id: str
    scope: Literal["tenant", "team", "key"]
    scope_id: str | None = None  # team id, key id; for scope "tenant" it is the tenant id (or None)
    rules: list[EgressRule] = []
    description: str | None = None


class Entitlement(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A tenant's licence to call a model group (or a family: "gpt-4o*") from starts_on to ends_on, both inclusive."""

    id: str
    tenant_id: str
    model_group: str
    starts_on: dt.date
    ends_on: dt.date
    exclusive: bool = False
    note: str | None = None
    revoked: bool = False

    def covers(self, model_group: str) -> bool:
        return glob_matches(self.model_group, model_group)

    def in_term(self, today: dt.date) -> bool:
        return self.starts_on <= today <= self.ends_on


class DeploymentFacts(msgspec.Struct, frozen=True):
    """What egress rules read about one deployment; built once per catalog."""

    name: str
    provider: str
    provider_kind: str
    region: str | None = None
    data_zone: str | None = None


def glob_matches(pattern: str, value: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def globs_overlap(a: str, b: str) -> bool:
    """Whether some name matches both patterns (exact names or one trailing `*`)."""
    a_glob, b_glob = a.endswith("*"), b.endswith("*")
    if not a_glob and not b_glob:
        return a == b
    if a_glob and not b_glob:
        return b.startswith(a[:-1])
    if b_glob and not a_glob:
        return a.startswith(b[:-1])
    pa, pb = a[:-1], b[:-1]
    return pa.startswith(pb) or pb.startswith(pa)


def pattern_problem(where: str, value: object) -> str | None:
    """What is wrong with a model-group name or family glob (`gpt-4o*`) as policy matches them (None: fine)."""
    if not isinstance(value, str) or not value:
        return f"{where}: empty value"
    found = fields.text(value, where)
    if found is not None:
        return found.message
    if "*" in value[:-1]:
        return f"{where}: '{value}' may use '*' only as its last character"
    return None


def rule_problems(rule: EgressRule, where: str = "rule") -> list[str]:
    problems = []
    for field, _, _ in DIMENSIONS:
        values = getattr(rule, field)
        if values is None:
            continue
        if not values:
            problems.append(f"{where}.{field}: an empty list matches nothing; omit the field to mean any")
        if len(values) > fields.LIST_MAX:
            problems.append(f"{where}.{field} has more than {fields.LIST_MAX} values ({len(values)})")
            continue
        if fields.plain_strings(values, fields.NAME_MAX, required=True) and not any("*" in v[:-1] for v in values):
            continue  # (checked in bulk: what pattern_problem finds, it finds in none of them)
        for i, v in enumerate(values):
            p = pattern_problem(f"{where}.{field}[{i}]", v)
            if p:
                problems.append(p)
    if rule.description is not None:
        found = fields.text(rule.description, f"{where}.description", max_len=fields.TEXT_MAX, required=False)
        if found is not None:
            problems.append(found.message)
    return problems


def policy_problems(policy: Policy) -> list[str]:
    """Everything wrong with a policy row; storage should refuse to save a row with problems."""
    where = f"policy {policy.id}"
    problems = []
    if policy.scope in (TEAM, KEY) and not policy.scope_id:
        problems.append(f"{where}: scope '{policy.scope}' needs a scope_id")
    if policy.scope == TENANT and policy.scope_id not in (None, policy.tenant_id):
        problems.append(f"{where}: a tenant-scope policy's scope_id must be its tenant id")
    if len(policy.rules) > fields.RULES_MAX:
        return [*problems, f"{where}.rules has more than {fields.RULES_MAX} rules ({len(policy.rules)})"]
    for i, rule in enumerate(policy.rules):
        problems.extend(rule_problems(rule, f"{where}.rules[{i}]"))
    return problems


def entitlement_problems(ent: Entitlement) -> list[str]:
    where = f"entitlement {ent.id}"
    problems = []
    if ent.ends_on < ent.starts_on:
        problems.append(f"{where}: ends_on {ent.ends_on} is before starts_on {ent.starts_on}")
    p = pattern_problem(f"{where}.model_group", ent.model_group)
    if p:
        problems.append(p)
    return problems
