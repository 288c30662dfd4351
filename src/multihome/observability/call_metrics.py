"""Metrics fed straight from the call's facts when nothing else meters the call.

With `metrics.enabled` in a config that meters nothing else (no storage, budgets, rate limits), the
whole record path (a CallRecord, metering's pricing and usage row bookkeeping, a MeteredCall) would
run only for the metrics to read a dozen fields of it: ~12 µs per call. This observer takes those
fields from the tracker instead and prices the call only when it has usage (the cost series): the
same counts as `Metrics.metered`, at a fraction of the cost (bench/metrics_bench.py).

The cost is priced as metering prices it (one way to price): `DeploymentPrice.charge`'s integer units,
as the double nearest the exact cost (`DeploymentPrice.amount`, what `MeteredCall.amount` gives the
metrics through metering).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..accounting.record import Usage
from ..accounting.tracker import Accounting, CallTracker
from ..metering.prices import PriceTable
from ..metering.service import Metering
from .metrics import Metrics

log = logging.getLogger("multihome.metrics")


class CallMetrics:
    """An `Accounting.observer` (accounting/tracker.py CallObserver): counts each finished call in
    `metrics`, priced at `prices()`."""

    __slots__ = ("metrics", "prices")

    def __init__(self, metrics: Metrics, prices: Callable[[], PriceTable]) -> None:
        self.metrics = metrics
        self.prices = prices  # metering's table at the time of the call (a reload replaces it)

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
        price = self.prices().get(deployment)
        if price is not None and price.tiers is not None:
            price = price.for_tier(tracker.tier)
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
                price.amount(usage, price.units(usage)) if price is not None and usage is not None else 0.0,
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
