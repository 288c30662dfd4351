"""Routing strategies, declared as one table: how each orders a model group's deployments.

A strategy scores every candidate deployment; the planner sorts by (score, position in the
group), so ties keep the order the config lists. `primary-first` scores nothing: the config order
is the plan. To add a strategy: one scoring function, one table entry, and its name in the
config's `ModelGroup.strategy` (tests/routing/test_strategies.py keeps the two lists equal).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .catalog import DeploymentRuntime
from .commitments import CommitmentSource
from .latency import LatencyStats


@dataclass(slots=True)
class ScoreInputs:
    """What one request gives the scoring functions."""

    prompt_tokens: int
    output_tokens: int
    stream: bool
    weights: Mapping[str, float]
    latency: LatencyStats
    commitments: CommitmentSource
    rand: random.Random


Score = Callable[[ScoreInputs, DeploymentRuntime], float]  # lower runs first


def _lowest_cost(q: ScoreInputs, dep: DeploymentRuntime) -> float:
    price = dep.price
    if price is None:
        return 0.0
    return (q.prompt_tokens * price.input + q.output_tokens * price.output) / 1_000_000


def _lowest_latency(q: ScoreInputs, dep: DeploymentRuntime) -> float:
    # Never-measured deployments go first (score 0) so they get measured.
    return q.latency.estimate(dep.name, stream=q.stream) or 0.0


def _weighted(q: ScoreInputs, dep: DeploymentRuntime) -> float:
    # A weighted random order without replacement (Efraimidis-Spirakis keys).
    w = q.weights.get(dep.name, 1.0)
    return -(q.rand.random() ** (1.0 / w)) if w > 0 else 0.0


def _commitment_burn_down(q: ScoreInputs, dep: DeploymentRuntime) -> float:
    # Most behind plan first: negated so that lower sorts first like the others.
    return -q.commitments.behind_plan(dep.commitment) if dep.commitment else 0.0


STRATEGIES: dict[str, Score | None] = {
    "primary-first": None,
    "lowest-cost": _lowest_cost,
    "lowest-latency": _lowest_latency,
    "weighted": _weighted,
    "commitment-burn-down": _commitment_burn_down,
}
