"""Observed latency per deployment: an EWMA of total time and of time to first byte."""

from __future__ import annotations


class LatencyStats:
    def __init__(self, alpha: float = 0.2) -> None:
        self._alpha = alpha
        self._total: dict[str, float] = {}
        self._first_byte: dict[str, float] = {}

    def observe(self, deployment: str, ms: float, *, stream: bool) -> None:
        table = self._first_byte if stream else self._total
        old = table.get(deployment)
        table[deployment] = ms if old is None else old + self._alpha * (ms - old)

    def estimate(self, deployment: str, *, stream: bool) -> float | None:
        """Milliseconds expected to first byte (streams) or to the whole answer; None if never seen."""
        table = self._first_byte if stream else self._total
        value = table.get(deployment)
        if value is None and stream:
            value = self._total.get(deployment)
        return value

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {"total_ms": dict(self._total), "first_byte_ms": dict(self._first_byte)}
