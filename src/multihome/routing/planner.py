"""Order a model group's deployments for one request, and say why, deployment by deployment.

The same `Planner.plan` serves real calls and `/v1/route/explain`, so the explanation is the
plan that runs. Skips happen before any call: a deployment that lacks a needed capability, whose
context window is too small, that the client narrowed away, or whose breaker is open.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

from ..schema import estimate
from ..schema.chat import ChatRequest
from .breakers import CLOSED, Breakers
from .catalog import DeploymentRuntime, GroupRuntime
from .commitments import CommitmentSource, OnPlan
from .latency import LatencyStats
from .strategies import STRATEGIES, ScoreInputs

ORDERED, SKIPPED = "ordered", "skipped"
TOO_MUCH_OUTPUT = "max output "  # a skip's reason: the deployment's output limit is below the request's


class Considered(msgspec.Struct):
    deployment: str
    decision: str  # ordered | skipped
    reason: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deployment": self.deployment, "decision": self.decision, "reason": self.reason}
        if self.score is not None:
            out["score"] = round(self.score, 6)
        return out


class Skip(msgspec.Struct):
    deployment: str
    reason: str


class Plan(msgspec.Struct):
    group: str
    strategy: str
    ordered: list[DeploymentRuntime]
    considered: list[Considered] = msgspec.field(default_factory=list)
    needs: frozenset[str] = frozenset()
    prompt_tokens: int | None = None
    # The call's admission of each deployment its admission did not charge (RequestShape.gate), for the
    # attempt loop; set on the call's own plan only when there is one.
    gate: Any = None

    @property
    def skipped(self) -> list[Skip]:
        return [Skip(c.deployment, c.reason) for c in self.considered if c.decision == SKIPPED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.group,
            "strategy": self.strategy,
            "needs": sorted(self.needs),
            "estimated_prompt_tokens": self.prompt_tokens,
            "order": [d.name for d in self.ordered],
            "deployments": [c.to_dict() for c in self.considered],
        }


class PolicyView(Protocol):
    """What policy allows for one caller and one model group (policy.engine.Decision fits)."""

    @property
    def deployments(self) -> frozenset[str]: ...  # the deployments the caller may reach
    @property
    def denied(self) -> Mapping[str, str]: ...  # deployment -> the rule that excluded it


class RequestShape(msgspec.Struct):
    """What planning reads from a request."""

    needs: frozenset[str]
    stream: bool = False
    chat: ChatRequest | None = None
    narrow: frozenset[str] | None = None  # deployments the client restricted itself to
    # Per model group (the requested one and its fallbacks): what the caller's policy allows.
    policy: Callable[[GroupRuntime], PolicyView] | None = None
    # Deployments to pass over for this call, with why (e.g. their own rate limit is reached).
    exclude: Mapping[str, str] | None = None
    # The call's failover attempts' own admission on their deployment's rate limits (routing/attempts.py
    # AttemptGate), when any deployment has one and the call was admitted; None: nothing to check.
    gate: Any = None

    def tokens(self) -> tuple[int, int | None]:
        if self.chat is None:
            return 0, None
        return estimate.prompt_tokens(self.chat), estimate.output_tokens(self.chat)


class Planner:
    def __init__(
        self,
        breakers: Breakers,
        latency: LatencyStats,
        commitments: CommitmentSource | None = None,
        rand: random.Random | None = None,
    ) -> None:
        self.breakers = breakers
        self.latency = latency
        self.commitments = commitments or OnPlan()
        self._rand = rand or random.Random()

    def plan(self, group: GroupRuntime, shape: RequestShape, *, explain: bool = False) -> Plan:
        considered: list[Considered] = []
        candidates: list[DeploymentRuntime] = []
        prompt = output = None
        if group.needs_size:
            prompt, output = shape.tokens()
        view = shape.policy(group) if shape.policy is not None else None
        for dep in group.deployments:
            if view is not None and dep.name not in view.deployments:
                considered.append(
                    Considered(dep.name, SKIPPED, "denied by policy: " + view.denied.get(dep.name, "not allowed"))
                )
                continue
            reason = self._skip_reason(dep, shape, prompt, output)
            if reason:
                considered.append(Considered(dep.name, SKIPPED, reason))
            else:
                candidates.append(dep)
        ordered, scores = (
            self._order(group, candidates, shape, prompt, output) if len(candidates) > 1 else (candidates, {})
        )
        if explain:  # the hot path needs only the order; reasons for ordered ones are for people
            for rank, dep in enumerate(ordered, 1):
                pos = group.position[dep.name]
                label = "primary" if pos == 0 else f"position {pos + 1} in config"
                why = (
                    f"rank {rank}: {label}" if group.strategy == "primary-first" else f"rank {rank} by {group.strategy}"
                )
                considered.append(Considered(dep.name, ORDERED, why, scores.get(dep.name)))
        return Plan(group.name, group.strategy, ordered, considered, shape.needs, prompt)

    def _skip_reason(self, dep: DeploymentRuntime, shape: RequestShape, prompt: int | None, output: int | None) -> str:
        if shape.narrow is not None and dep.name not in shape.narrow:
            return "not among the deployments the request narrowed to"
        if shape.exclude is not None and dep.name in shape.exclude:
            return shape.exclude[dep.name]
        if not shape.needs <= dep.capabilities:
            return "lacks " + ", ".join(sorted(shape.needs - dep.capabilities))
        if dep.context_window and prompt is not None:
            wanted = prompt + (output or 0)
            if wanted > dep.context_window:
                return f"context window {dep.context_window} < ~{wanted} tokens needed"
        if dep.max_output_tokens and output and output > dep.max_output_tokens:
            return f"{TOO_MUCH_OUTPUT}{dep.max_output_tokens} < {output} tokens requested"
        if self.breakers.get(dep.name).state != CLOSED:  # a closed breaker allows every call
            ok, why = self.breakers.allows(dep.name)
            if not ok:
                return why
        return ""

    def _order(
        self,
        group: GroupRuntime,
        candidates: list[DeploymentRuntime],
        shape: RequestShape,
        prompt: int | None,
        output: int | None,
    ) -> tuple[list[DeploymentRuntime], dict[str, float]]:
        score = STRATEGIES[group.strategy]
        if score is None or len(candidates) < 2:
            return candidates, {}
        inputs = ScoreInputs(
            prompt or 0,
            output or estimate.DEFAULT_OUTPUT_TOKENS,
            shape.stream,
            group.policy.weights,
            self.latency,
            self.commitments,
            self._rand,
        )
        scores = {d.name: score(inputs, d) for d in candidates}
        position = group.position
        ordered = sorted(candidates, key=lambda d: (scores[d.name], position[d.name]))
        return ordered, scores
