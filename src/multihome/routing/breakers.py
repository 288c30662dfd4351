"""Circuit breakers per deployment: closed -> open -> one half-open probe -> closed or open again.

A breaker counts declines that say "this deployment is unwell" (capacity, unavailable). It is
checked in memory on the hot path; `SharedBreakers` (breakers_redis.py) keeps replicas in step.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Breaker as BreakerPolicy

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class BreakerState:
    policy: BreakerPolicy
    state: str = CLOSED
    consecutive: int = 0
    open_until: float = 0.0
    probing: bool = False
    recent: deque[tuple[float, bool]] = field(default_factory=deque)  # (time, ok) within window_s, for error_rate
    shared_failures: int = 0  # the replica-wide count last seen in Redis (SharedBreakers)

    def allows(self, now: float) -> tuple[bool, str]:
        """Whether a call may go to this deployment now; a half-open breaker admits one probe."""
        if self.state == CLOSED:
            return True, ""
        if self.state == OPEN and now < self.open_until:
            return False, f"breaker open for {self.open_until - now:.1f}s more"
        if self.probing:
            return False, "breaker half-open, probe in flight"
        return True, "half-open probe"

    def begin(self, now: float) -> bool:
        """Take the probe slot when half-open. Returns False if another call got it first."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now < self.open_until:
            return False
        if self.probing:
            return False
        self.state = HALF_OPEN
        self.probing = True
        return True

    def record(self, ok: bool, now: float) -> str | None:
        """Record an outcome; returns the new state when it changed."""
        p = self.policy
        if p.error_rate > 0:
            self.recent.append((now, ok))
            while self.recent and self.recent[0][0] < now - p.window_s:
                self.recent.popleft()
        if ok:
            self.consecutive = 0
            if self.state != CLOSED:
                self.state, self.probing = CLOSED, False
                self.recent.clear()
                return CLOSED
            return None
        self.consecutive += 1
        if self.state == HALF_OPEN or self._tripped():
            return self.trip(now)
        return None

    def trip(self, now: float, until: float | None = None) -> str:
        self.state, self.probing = OPEN, False
        self.open_until = until if until is not None else now + self.policy.cooldown_s
        return OPEN

    def _tripped(self) -> bool:
        p = self.policy
        if p.consecutive_failures and self.consecutive >= p.consecutive_failures:
            return True
        if p.error_rate > 0 and len(self.recent) >= p.min_requests:
            failed = sum(1 for _, ok in self.recent if not ok)
            return failed / len(self.recent) >= p.error_rate
        return False

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "consecutive_failures": self.consecutive}
        if self.state == OPEN:
            out["reopens_in_s"] = round(max(0.0, self.open_until - now), 3)
        return out


class Breakers:
    """All deployments' breakers in this process. `on_change` lets a shared store follow along."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._states: dict[str, BreakerState] = {}

    def get(self, deployment: str) -> BreakerState:
        state = self._states.get(deployment)
        if state is None:
            state = self._states[deployment] = BreakerState(self.policy)
        return state

    def now(self) -> float:
        return self._clock()

    def allows(self, deployment: str) -> tuple[bool, str]:
        return self.get(deployment).allows(self._clock())

    def begin(self, deployment: str) -> bool:
        return self.get(deployment).begin(self._clock())

    async def admit(self, deployment: str) -> bool:
        """May a call go to this deployment now? Takes the half-open probe slot when due."""
        return self.begin(deployment)

    def record(self, deployment: str, ok: bool) -> str | None:
        return self.get(deployment).record(ok, self._clock())

    async def start(self, deployments: list[str]) -> None:
        return None

    async def close(self) -> None:
        return None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {name: s.describe(now) for name, s in self._states.items()}
