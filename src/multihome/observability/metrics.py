"""Prometheus metrics of the gateway: what each call did, and the state of its queues, breakers and limits.

Two kinds of series (every one is listed in docs/metrics.md):

- counted per call, from the record the accounting step already builds (`metered`, a MeteredSink
  fed by metering with the call and its cost): requests, latency and time-to-first-chunk, tokens,
  cost, attempts and refusals. The per-call path is a tuple key, one dict lookup and plain
  arithmetic on that label set's tally (a count, sums, a bucket index by bisection); the tallies
  are handed to prometheus_client's metrics (`fold`) at every scrape and every `publish_interval_s`,
  so no call takes prometheus_client's locks or writes its memory-mapped files;
- read, not counted: queue depths, breaker states, budget and rate-limit headroom, the KMS cache
  and drop counts are read from their owners when `/metrics` is scraped (`publish`), never updated
  per call.

Label values are bounded by the config and the store: a model group, deployment or endpoint not in
the config becomes `other`, a tenant the store does not know (or `static_keys_tenant`) becomes
`other`, and free-form codes are capped (the first `_MAX_CODES` seen, then `other`). No label ever
holds content, a key or a client-chosen string.

Multi-process (`serve --workers N`): prometheus_client's multiprocess mode, enabled by the
environment variable PROMETHEUS_MULTIPROC_DIR that `serve` sets to a fresh directory per run
(metrics_dir.py). Counters and histograms are summed across workers by the worker that answers the
scrape; the read gauges are published by every worker each `publish_interval_s` (and by the scraped
one at once) with a per-metric rule across live workers (sum of queue depths, worst breaker state,
least headroom).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from ..accounting.record import Usage
from ..aio import cancel_and_wait, wait_event
from ..metering.record import MeteredCall
from ..outage_log import OutageLog
from .genai import CODE_SHAPE, DURATION_BUCKETS, OPERATION_NAMES, TOKEN_BUCKETS
from .metrics_dir import MULTIPROC_ENV
from .metrics_view import OTHER, TenantView

log = logging.getLogger("multihome.metrics")

NONE = "none"  # no deployment served (refused, declined)
_MAX_CODES = 200  # distinct error codes and attempt outcomes kept as label values
_MAX_SERIES = 20_000  # cached per-call label sets (then folded and emptied)
# OpenTelemetry's advisory buckets for gen_ai time-to-first-chunk (seconds).
TTFC_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

_GENAI = ("gen_ai_operation_name", "gen_ai_request_model", "deployment")


class _Bounded:
    """The first `limit` distinct values seen that look like codes pass as they are; later ones, and any
    that does not look like a code, become `other`."""

    def __init__(self, limit: int) -> None:
        self.seen: set[str] = set()
        self.limit = limit

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit or not CODE_SHAPE.fullmatch(value):
            return OTHER
        self.seen.add(value)
        return value


class _Tally:
    """Observations of one histogram child not yet handed to it: a sum and a count per bucket."""

    __slots__ = ("bounds", "total", "counts")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # the child's upper bounds, +Inf last
        self.total = 0.0
        self.counts = [0] * len(bounds)

    def add(self, value: float) -> None:
        self.total += value
        self.counts[bisect_left(self.bounds, value)] += 1  # the bucket Histogram.observe would pick

    def fold(self, child: Any) -> None:
        """Hand the tally to the histogram child, as that many `observe` calls would have.

        Through the child's value cells (`_sum`, `_buckets`, one per bound, not cumulative): the
        only way to add many observations at once; tests/observability/test_metrics.py checks the
        result equals `observe` one by one, so a prometheus_client that changes them fails there."""
        if self.total or any(self.counts):
            child._sum.inc(self.total)
            cells = child._buckets
            for i, n in enumerate(self.counts):
                if n:
                    cells[i].inc(n)
            self.total = 0.0
            self.counts = [0] * len(self.bounds)


class _Series:
    """One label set of a call: what was counted since the last fold, and the children it folds into
    (those a refused call never uses are bound on first use: a series never observed is not exposed)."""

    __slots__ = (
        "labels", "currency", "children", "usage_children", "ttfc_child",
        "n", "duration", "ttfc", "tokens_in", "tokens_out", "input_total", "output_total", "cost",
    )  # fmt: skip

    def __init__(self, labels: tuple[str, str, str, str], currency: str, children: tuple[Any, Any, Any]) -> None:
        self.labels = labels  # (operation, model group, deployment, tenant) label values
        self.currency = currency
        self.children = children  # (requests counter, duration histogram, error counter or None)
        self.usage_children: tuple[Any, ...] | None = None
        self.ttfc_child: Any = None
        self.n = 0
        self.duration = _Tally(_bounds(DURATION_BUCKETS))
        self.ttfc: _Tally | None = None
        self.tokens_in: _Tally | None = None
        self.tokens_out: _Tally | None = None
        self.input_total = 0
        self.output_total = 0
        self.cost = 0.0


def _bounds(buckets: tuple[float, ...]) -> tuple[float, ...]:
    return (*(float(b) for b in buckets), math.inf)


@dataclass(frozen=True, slots=True)
class Sources:
    """What the read series are read from; each may be absent (not configured)."""

    deployments: tuple[str, ...] = ()
    breakers: Any = None  # routing.Breakers: get(name).state / open_until, now()
    usage_writer: Callable[[], Any] | None = None  # -> metering.writer.UsageWriter or None (made at start)
    audit: Any = None  # audit.AuditLog: queued, waiting, on_flush
    call_log: Any = None  # observability.CallLog: depth, dropped
    capture: Callable[[], Any] | None = None  # -> crypto.capture.CaptureWriter or None
    telemetry: Any = None  # observability.Telemetry: backlog_bytes, dropped
    keyring: Callable[[], Any] | None = None  # -> crypto.Keyring or None: cache_hits, cache_misses
    limiter: Any = None  # metering.Limiter, for headroom
    known_tenants: Callable[[], Iterable[str]] | None = None  # the store's tenants (ids)


class Metrics:
    """The gateway's metrics: a MeteredSink per call, a service for publishing, an exposition on scrape."""

    def __init__(
        self,
        groups: Iterable[str],
        deployments: Iterable[str],
        *,
        static_tenants: Iterable[str] = (),
        publish_interval_s: float = 5.0,
        headroom: bool = True,
    ) -> None:
        disable_created_metrics()  # one `_created` series per counter doubles the exposition for nothing
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        self.groups = frozenset(groups)
        self.deployments = frozenset(deployments)
        self._static_tenants = frozenset(static_tenants)
        self.sources = Sources()
        self.publish_interval_s = publish_interval_s
        self._stop = asyncio.Event()  # set by close(): the publish loop ends
        self.headroom = headroom
        self._series: dict[tuple, _Series] = {}
        self._codes = _Bounded(_MAX_CODES)
        self._outcomes = _Bounded(_MAX_CODES)
        self._attempt_children: dict[tuple[str, str, str], Any] = {}
        self._attempts_pending: dict[tuple[str, str, str], int] = {}
        self._http_pending: dict[tuple[str, str, int], int] = {}
        self._last: dict[str, float] = {}  # cumulative counts read from their owners, at the last publish
        self._task: asyncio.Task[None] | None = None
        self._known: object = None  # the store's tenant set the cached label sets were made with
        r = self.registry
        # Every series is listed, with its labels and meaning, in docs/metrics.md.
        counters = (
            Counter(name, doc, labels, registry=r)
            for name, doc, labels in (
                (
                    "multihome_requests",
                    "Model calls by endpoint, model group, serving deployment, HTTP status and outcome",
                    ["endpoint", "model_group", "deployment", "status", "outcome"],
                ),
                (
                    "multihome_request_errors",
                    "Model calls that ended in an error, by its code (budget_exceeded, policy_denied, ...)",
                    ["endpoint", "model_group", "outcome", "code"],
                ),
                (
                    "multihome_http_requests",
                    "Every HTTP request by route (as the route table declares it, or unmatched) and status",
                    ["route", "status"],
                ),
                (
                    "multihome_attempts",
                    "Attempts on deployments by outcome: ok, or why one was declined or skipped (http_503, ...)",
                    ["model_group", "deployment", "outcome"],
                ),
                (
                    "multihome_tokens",
                    "Tokens by model group, deployment and tenant; type input or output",
                    ["model_group", "deployment", "tenant", "type"],
                ),
                (
                    "multihome_cost",
                    "Cost at the configured prices, in the currency named by the label",
                    ["model_group", "deployment", "tenant", "currency"],
                ),
                ("multihome_writer_dropped", "Records a writer dropped (a full queue)", ["writer"]),
                (
                    "multihome_kms_datakey_cache",
                    "Data-key lookups by the keyring: hit (unwrapped key cached) or miss (KMS or database)",
                    ["result"],
                ),
            )
        )
        self.requests, self.errors, self.http, self.attempts, self.tokens, self.cost, self.dropped, self.kms_cache = (
            counters
        )
        # The OpenTelemetry GenAI histograms, as the conventions name them, and the writers' flushes.
        self.duration, self.ttfc, self.token_usage, self.flush = (
            Histogram(name, doc, labels, buckets=buckets, registry=r)
            for name, doc, labels, buckets in (
                (
                    "gen_ai_client_operation_duration_seconds",
                    "Whole call as the gateway served it, every attempt included (gen_ai.client.operation.duration)",
                    [*_GENAI, "error_type"],
                    DURATION_BUCKETS,
                ),
                (
                    "gen_ai_client_operation_time_to_first_chunk_seconds",
                    "Streamed calls: request to the first chunk sent (gen_ai.client.operation.time_to_first_chunk)",
                    _GENAI,
                    TTFC_BUCKETS,
                ),
                (
                    "gen_ai_client_token_usage",
                    "Tokens per call, input and output (gen_ai.client.token.usage)",
                    [*_GENAI, "gen_ai_token_type"],
                    TOKEN_BUCKETS,
                ),
                (
                    "multihome_writer_flush_duration_seconds",
                    "One batch written by a batched writer (usage, audit, call_log, capture)",
                    ["writer"],
                    FLUSH_BUCKETS,
                ),
            )
        )
        # Read, not counted; `mode`: how multiprocess mode combines the live workers' values.
        gauges: tuple[tuple[str, str, list[str], Literal["livesum", "livemax", "livemin"]], ...] = (
            (
                "multihome_writer_queue_depth",
                "Records waiting in a batched writer (summed over workers)",
                ["writer"],
                "livesum",
            ),
            (
                "multihome_telemetry_backlog_bytes",
                "Encoded calls not yet taken by the OpenTelemetry export worker (summed over workers)",
                [],
                "livesum",
            ),
            (
                "multihome_breaker_state",
                "Circuit breaker of each deployment: 0 closed, 1 half-open (a probe may pass), 2 open (worst over workers)",
                ["deployment"],
                "livemax",
            ),
            (
                "multihome_budget_remaining",
                "What is left of a budget this period (amount minus spent or reserved), in its currency",
                ["scope", "id", "period", "currency", "tenant"],
                "livemin",
            ),
            (
                "multihome_rate_limit_remaining",
                "What is left of a rate limit in the current minute; kind requests or tokens",
                ["scope", "id", "kind", "tenant"],
                "livemin",
            ),
        )
        self.queue_depth, self.telemetry_backlog, self.breaker, self.budget_remaining, self.rate_remaining = (
            Gauge(name, doc, labels, registry=r, multiprocess_mode=mode) for name, doc, labels, mode in gauges
        )
        self._flush_children: dict[str, Any] = {}

    # -- per call (MeteredSink) ----------------------------------------------------------------
    def metered(self, m: MeteredCall) -> None:
        """Count one call: plain arithmetic on this label set's tally, handed to prometheus_client
        by `fold` (at every scrape and publish), not one locked update per series per call."""
        call = m.call
        self.count(
            call.endpoint,
            call.model_group,
            call.deployment,
            call.status,
            call.outcome,
            call.tenant,
            call.error_code,
            call.latency_ms,
            call.first_byte_ms if call.stream else None,
            call.usage,
            m.amount,  # float(cost), without making the Decimal
            m.currency,
            call.attempts,
        )

    def count(
        self,
        endpoint: str,
        group: str,
        deployment: str | None,
        status: int,
        outcome: str,
        tenant: str,
        error_code: str | None,
        latency_ms: float,
        stream_first_byte_ms: float | None,
        usage: Usage | None,
        cost: float,
        currency: str,
        attempts: Iterable[Any],
    ) -> None:
        """`metered` from the call's facts (CallMetrics calls this directly when nothing but metrics
        consumes the call, so no CallRecord is built). `attempts`: items with .deployment and .outcome."""
        key = (endpoint, group, deployment, status, outcome, tenant, error_code)
        s = self._series.get(key)
        if s is None:
            s = self._bind(key, currency)
        s.n += 1
        # _Tally.add, inlined (a method call each is a tenth of this path).
        tally, value = s.duration, latency_ms / 1000
        tally.total += value
        tally.counts[bisect_left(tally.bounds, value)] += 1
        if stream_first_byte_ms is not None:
            ttfc = s.ttfc
            if ttfc is None:
                ttfc = s.ttfc = _Tally(_bounds(TTFC_BUCKETS))
            ttfc.add(stream_first_byte_ms / 1000)
        if usage is not None:
            tokens_in, tokens_out = s.tokens_in, s.tokens_out
            if tokens_in is None or tokens_out is None:
                tokens_in = s.tokens_in = _Tally(_bounds(TOKEN_BUCKETS))
                tokens_out = s.tokens_out = _Tally(tokens_in.bounds)
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            tokens_in.total += prompt
            tokens_in.counts[bisect_left(tokens_in.bounds, prompt)] += 1
            tokens_out.total += completion
            tokens_out.counts[bisect_left(tokens_out.bounds, completion)] += 1
            s.input_total += prompt
            s.output_total += completion
            if cost:
                s.cost += cost
        if attempts:
            pending = self._attempts_pending
            for attempt in attempts:
                akey = (group, attempt.deployment, attempt.outcome)
                pending[akey] = pending.get(akey, 0) + 1

    def http_request(self, call: Any) -> None:
        """Count one finished HTTP request (`api.pipeline.Call`): its route as declared, never the path sent."""
        route = call.route
        key = (route.method, route.path, call.status or 499) if route is not None else ("", "", call.status or 499)
        pending = self._http_pending
        pending[key] = pending.get(key, 0) + 1

    def fold(self) -> None:
        """Hand every tally to its prometheus_client children (then the exposition, or the worker's
        files in multiprocess mode, hold every call counted so far)."""
        for s in self._series.values():
            if s.n:
                self._fold(s)
        http, self._http_pending = self._http_pending, {}
        for (method, path, status), n in http.items():
            self.http.labels(f"{method} {path}" if path else "unmatched", str(status)).inc(n)
        pending, self._attempts_pending = self._attempts_pending, {}
        for (group, deployment, outcome), n in pending.items():
            child = self._attempt_children.get((group, deployment, outcome))
            if child is None:
                child = self._attempt_child(group, deployment, outcome)
            child.inc(n)

    def _fold(self, s: _Series) -> None:
        requests, duration, error = s.children
        requests.inc(s.n)
        if error is not None:
            error.inc(s.n)
        s.n = 0
        s.duration.fold(duration)
        operation, group, deployment, tenant = s.labels
        if s.ttfc is not None:
            if s.ttfc_child is None:
                s.ttfc_child = self.ttfc.labels(operation, group, deployment)
            s.ttfc.fold(s.ttfc_child)
        if s.tokens_in is not None and s.tokens_out is not None:
            if s.usage_children is None:
                s.usage_children = (
                    self.token_usage.labels(operation, group, deployment, "input"),
                    self.token_usage.labels(operation, group, deployment, "output"),
                    self.tokens.labels(group, deployment, tenant, "input"),
                    self.tokens.labels(group, deployment, tenant, "output"),
                    self.cost.labels(group, deployment, tenant, s.currency),
                )
            tokens_in, tokens_out, input_total, output_total, cost = s.usage_children
            s.tokens_in.fold(tokens_in)
            s.tokens_out.fold(tokens_out)
            input_total.inc(s.input_total)
            output_total.inc(s.output_total)
            cost.inc(s.cost)
            s.input_total = s.output_total = 0
            s.cost = 0.0

    def _bind(self, key: tuple, currency: str) -> _Series:
        endpoint, group, deployment, status, outcome, tenant, code = key
        endpoint_label = endpoint if endpoint in OPERATION_NAMES else OTHER
        group_label = group if group in self.groups else OTHER
        dep_label = NONE if deployment is None else deployment if deployment in self.deployments else OTHER
        tenant_label = self._tenant(tenant)
        outcome_label = self._outcomes(outcome)
        operation = OPERATION_NAMES.get(endpoint, OTHER)
        error_type = self._codes(code) if code is not None else ""
        series = _Series(
            (operation, group_label, dep_label, tenant_label),
            currency,
            (
                self.requests.labels(endpoint_label, group_label, dep_label, str(status), outcome_label),
                self.duration.labels(operation, group_label, dep_label, error_type),
                self.errors.labels(endpoint_label, group_label, outcome_label, error_type) if code else None,
            ),
        )
        # Cached even for a tenant labelled `other`: a new store snapshot clears the cache (publish). A full
        # cache (a caller naming a new tenant per call) is folded and emptied, not left full: else every call
        # after it, of any tenant, would bind its labels and fold at once.
        if len(self._series) >= _MAX_SERIES:
            self.fold()
            self._series.clear()
        self._series[key] = series
        return series

    def _attempt_child(self, group: str, deployment: str, outcome: str) -> Any:
        child = self.attempts.labels(
            group if group in self.groups else OTHER,
            deployment if deployment in self.deployments else OTHER,
            self._outcomes(outcome),
        )
        if len(self._attempt_children) >= _MAX_SERIES:
            self._attempt_children.clear()
        self._attempt_children[(group, deployment, outcome)] = child
        return child

    def _tenant(self, tenant: str) -> str:
        if tenant in self._static_tenants:
            return tenant
        known = self.sources.known_tenants
        if known is not None and tenant in known():
            return tenant
        return OTHER

    # -- the batched writers' flush hook -------------------------------------------------------
    def flush_observer(self, writer: str) -> Callable[[float], None]:
        """What a writer calls with the seconds one batch took (from any thread)."""
        child = self._flush_children.get(writer)
        if child is None:
            child = self._flush_children[writer] = self.flush.labels(writer)
        return child.observe

    # -- read at scrape time (and published by every worker in multiprocess mode) ----------------
    async def publish(self) -> None:
        """Read what is read, not counted: queue depths, breakers, drops, the KMS cache, headroom."""
        self.fold()
        src = self.sources
        if src.known_tenants is not None:
            known = src.known_tenants()
            if known is not self._known:  # a new store snapshot: tenants labelled `other` may be known now
                self._known = known
                self.fold()
                self._series.clear()
        depth = self.queue_depth
        writer = src.usage_writer() if src.usage_writer is not None else None
        if writer is not None:
            depth.labels("usage").set(len(writer.rows))
        if src.audit is not None:
            depth.labels("audit").set(src.audit.queued + src.audit.waiting)
        if src.call_log is not None:
            depth.labels("call_log").set(src.call_log.depth)
            self._count("dropped:call_log", src.call_log.dropped, self.dropped.labels("call_log"))
        capture = src.capture() if src.capture is not None else None
        if capture is not None:
            depth.labels("capture").set(capture.depth)
            self._count("dropped:capture", capture.dropped, self.dropped.labels("capture"))
        if src.telemetry is not None:
            self.telemetry_backlog.set(src.telemetry.backlog)
            self._count("dropped:telemetry", src.telemetry.dropped, self.dropped.labels("telemetry"))
        keyring = src.keyring() if src.keyring is not None else None
        if keyring is not None:
            self._count("kms:hit", keyring.cache_hits, self.kms_cache.labels("hit"))
            self._count("kms:miss", keyring.cache_misses, self.kms_cache.labels("miss"))
        if src.breakers is not None:
            now = src.breakers.now()
            for name in src.deployments:
                state = src.breakers.get(name)
                value = _BREAKER_VALUES.get(state.state, 2.0)
                if value == 2.0 and now >= state.open_until:
                    value = 1.0  # cooled down: the next call is the half-open probe
                self.breaker.labels(name).set(value)
        if self.headroom and src.limiter is not None:
            try:
                await asyncio.wait_for(self._headroom(src.limiter), 2.0)
            except Exception as exc:  # Redis unreachable: the other series still answer
                log.warning("metrics: budget and rate-limit headroom not read (%s)", exc)

    def _count(self, name: str, total: int, child: Any) -> None:
        """Turn a cumulative count its owner keeps into counter increments (exact across workers)."""
        delta = total - self._last.get(name, 0)
        if delta > 0:
            child.inc(delta)
        self._last[name] = total

    async def _headroom(self, limiter: Any) -> None:
        from ..metering.headroom import headroom

        tenants: set[str] = set(self._static_tenants)
        if self.sources.known_tenants is not None:
            tenants.update(self.sources.known_tenants())
        budgets, rates = await headroom(limiter, tenants)
        if not self.multiprocess:  # a budget deleted since the last scrape leaves the exposition
            self.budget_remaining.clear()
            self.rate_remaining.clear()
        for budget, left in budgets:  # (scope, id, period, currency, tenant)
            self.budget_remaining.labels(*budget).set(left)
        for rate, remaining in rates:  # (scope, id, kind, tenant)
            self.rate_remaining.labels(*rate).set(remaining)

    # -- lifecycle (a gateway service) ---------------------------------------------------------
    async def start(self) -> None:
        """After the writers started (the composition root starts this service last): hook their flushes."""
        src = self.sources
        writers = {
            "usage": src.usage_writer() if src.usage_writer is not None else None,
            "audit": src.audit,
            "call_log": src.call_log,
            "capture": src.capture() if src.capture is not None else None,
        }
        for name, writer in writers.items():
            if writer is not None:
                writer.on_flush = self.flush_observer(name)
        self._task = asyncio.get_running_loop().create_task(self._publish_loop())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Told to stop, then awaited (bounded): a cancel alone can be lost in a publish's read on 3.11 (aio.py),
            # and the loop then ran on past close.
            self._stop.set()
            await asyncio.wait({task}, timeout=5.0)
            await cancel_and_wait(task)  # (done already, unless a publish is stuck)
        self.fold()  # the last calls of this worker into its files, before it exits
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # its live gauges leave the sums

    async def _publish_loop(self) -> None:
        failing = OutageLog(
            log, "metrics: publishing this worker's gauges failed", recovered="metrics: gauges published again"
        )
        while True:
            try:
                await self.publish()
            except Exception as exc:
                failing.failed(exc, traceback=True)
            else:
                failing.ok()
            if await wait_event(self._stop, self.publish_interval_s):
                return

    # -- exposition ------------------------------------------------------------------------------
    async def exposition(self, accept: str | None, tenant: str | None = None) -> tuple[bytes, str]:
        """The scrape's body and content type (text format 0.0.4/1.0, or OpenMetrics if asked for); with
        `tenant`, only that tenant's series (metrics_view.py: a tenant's auditor's scrape)."""
        await self.publish()
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess:
            return await asyncio.to_thread(_aggregate, encoder, tenant), content_type
        return encoder(_narrowed(self.registry, tenant)), content_type


def _narrowed(registry: CollectorRegistry, tenant: str | None) -> Any:
    return registry if tenant is None else TenantView(registry, tenant)


def _aggregate(encoder: Callable[[Any], bytes], tenant: str | None = None) -> bytes:
    """Every worker's series, summed (reads the per-process files of PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return encoder(_narrowed(registry, tenant))
