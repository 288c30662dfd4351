"""Order a model group's deployments for one request; skip those lacking a needed capability."""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import DeploymentRuntime, GroupRuntime


@dataclass(slots=True, frozen=True)
class Skip:
    deployment: str
    reason: str


@dataclass(slots=True)
class Plan:
    ordered: list[DeploymentRuntime]
    skipped: list[Skip]


def plan(group: GroupRuntime, needs: frozenset[str]) -> Plan:
    ordered: list[DeploymentRuntime] = []
    skipped: list[Skip] = []
    for dep in group.deployments:
        missing = needs - dep.capabilities
        if missing:
            skipped.append(Skip(dep.name, "lacks " + ",".join(sorted(missing))))
        else:
            ordered.append(dep)
    return Plan(ordered, skipped)
