"""Who may reach which deployments: egress and residency rules, entitlements, decisions with reasons."""

from .egress import RuleTrace
from .engine import (
    EGRESS_DENIED,
    ENDPOINT_NOT_IN_KEY_SCOPE,
    MODEL_NOT_IN_KEY_SCOPE,
    POLICY_UNAVAILABLE,
    Decision,
    PolicyEngine,
    Snapshot,
)
from .entitlements import (
    ENTITLEMENT_EXPIRED,
    ENTITLEMENT_NOT_STARTED,
    ENTITLEMENT_REQUIRED,
    ENTITLEMENT_REVOKED,
    EXCLUSIVE_TO_OTHER_TENANT,
    GrantConflict,
    check_grant,
)
from .model import DeploymentFacts, EgressRule, Entitlement, Policy, entitlement_problems, policy_problems

__all__ = [
    "Decision",
    "DeploymentFacts",
    "EgressRule",
    "Entitlement",
    "GrantConflict",
    "Policy",
    "PolicyEngine",
    "RuleTrace",
    "Snapshot",
    "check_grant",
    "entitlement_problems",
    "policy_problems",
    "EGRESS_DENIED",
    "ENDPOINT_NOT_IN_KEY_SCOPE",
    "MODEL_NOT_IN_KEY_SCOPE",
    "POLICY_UNAVAILABLE",
    "ENTITLEMENT_EXPIRED",
    "ENTITLEMENT_NOT_STARTED",
    "ENTITLEMENT_REQUIRED",
    "ENTITLEMENT_REVOKED",
    "EXCLUSIVE_TO_OTHER_TENANT",
]
