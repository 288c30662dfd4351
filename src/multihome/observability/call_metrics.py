"""Metrics fed straight from the call's facts when nothing else meters the call.

With `metrics.enabled` in a config that meters nothing else (no storage, budgets, rate limits), the
whole record path (a CallRecord, metering's pricing and usage row bookkeeping, a MeteredCall) would
run only for the metrics to read a dozen fields of it: ~12 µs per call. This observer takes those
fields from the tracker instead and prices the call only when it has usage (the cost series): the
same counts as `Metrics.metered`, at a fraction of the cost (bench/metrics_bench.py).

The cost is the float of the exact Decimal cost metering computes, reached in integer arithmetic: the
prices scaled to integers once per price table, and one correctly rounded int / int division (as
`float(Decimal)` is correctly rounded, both are the double nearest the exact cost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..accounting.record import Usage
from ..accounting.tracker import Accounting, CallTracker
from ..metering.prices import DeploymentPrice, PriceTable
from ..metering.service import Metering
from .metrics import Metrics

log = logging.getLogger("multihome.metrics")


class _Scaled:
    """One deployment's prices as integers over a common denominator (tokens x price / 1M exactly)."""

    __slots__ = ("input", "cached_input", "output", "denominator", "currency")

    def __init__(self, price: DeploymentPrice) -> None:
        cached = price.cached_input if price.cached_input is not None else price.input
        places = max(0, *(-int(d.as_tuple().exponent) for d in (price.input, cached, price.output)))
        scale = 10**places
        self.input, self.cached_input, self.output = (int(d * scale) for d in (price.input, cached, price.output))
        self.denominator = scale * 1_000_000
        self.currency = price.currency

    def cost(self, usage: Usage) -> float:
        """float(DeploymentPrice.cost(usage)), without Decimal arithmetic."""
        prompt, cached, completion = usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        prompt = prompt if prompt > 0 else 0  # the clamps of DeploymentPrice.cost, without builtin calls
        cached = (cached if cached > 0 else 0) if cached < prompt else prompt
        completion = completion if completion > 0 else 0
        total = (prompt - cached) * self.input + cached * self.cached_input + completion * self.output
        return total / self.denominator


class CallMetrics:
    """An `Accounting.observer` (accounting/tracker.py CallObserver): counts each finished call in
    `metrics`, priced at `prices()`."""

    __slots__ = ("metrics", "prices", "_table", "_scaled")

    def __init__(self, metrics: Metrics, prices: Callable[[], PriceTable]) -> None:
        self.metrics = metrics
        self.prices = prices  # metering's table at the time of the call (a reload replaces it)
        self._table: PriceTable | None = None
        self._scaled: dict[str | None, _Scaled | None] = {}  # per deployment, for `_table`

    def __call__(
        self,
        tracker: CallTracker,
        status: int,
        outcome: str,
        deployment: str | None,
        attempts: Iterable[Any],
        usage: Usage | None,
        latency_ms: float,
        stream_first_byte_ms: float | None,
        error_code: str | None,
    ) -> None:
        table = self.prices()
        if table is not self._table:
            self._table, self._scaled = table, {}
        try:
            price = self._scaled[deployment]
        except KeyError:
            found = table.get(deployment)
            price = self._scaled[deployment] = _Scaled(found) if found is not None else None
        try:
            self.metrics.count(
                tracker.endpoint,
                tracker.model_group,
                deployment,
                status,
                outcome,
                tracker.principal.tenant,
                error_code,
                latency_ms,
                stream_first_byte_ms,
                usage,
                price.cost(usage) if price is not None and usage is not None else 0.0,
                price.currency if price is not None else "USD",
                attempts,
            )
        except Exception:
            log.exception("metrics failed on %s", tracker.request_id)  # as metering's sinks: the call goes on


def attach(metrics: Metrics, metering: Metering, accounting: Accounting) -> None:
    """Feed `metrics` with every call: through metering when it meters the calls anyway (a sink of
    its MeteredCall), else straight from the tracker (no record is built for metrics alone)."""
    if metering in accounting.sinks:
        metering.add_sink(metrics)
    else:
        accounting.observer = CallMetrics(metrics, lambda: metering.prices)
