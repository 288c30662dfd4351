"""Where commitment burn-down numbers come from.

Metering (issue 6) will implement `CommitmentSource` from the usage ledger. Until then a
config-free source reports every pool as on plan, so `commitment-burn-down` keeps config order.
"""

from __future__ import annotations

from typing import Protocol


class CommitmentSource(Protocol):
    def behind_plan(self, pool: str) -> float:
        """How far the pool's actual burn trails its planned burn, as a fraction of the commitment.

        Positive: behind plan (prefer it); negative: ahead of plan.
        """
        ...


class OnPlan:
    def behind_plan(self, pool: str) -> float:
        return 0.0


class StaticCommitments:
    """Fixed values, for tests and for operators who feed numbers from elsewhere."""

    def __init__(self, values: dict[str, float]) -> None:
        self._values = dict(values)

    def behind_plan(self, pool: str) -> float:
        return self._values.get(pool, 0.0)
