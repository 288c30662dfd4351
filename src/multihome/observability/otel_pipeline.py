"""The OpenTelemetry SDK pipeline: CallRecord -> one GenAI CLIENT span and the two GenAI client
histograms, exported over OTLP/HTTP by the official SDK (BatchSpanProcessor, bounded queue;
PeriodicExportingMetricReader).

It runs in the telemetry worker process (`telemetry_worker.py`), never in the gateway's own: the
SDK builds and encodes spans in Python, about 100 µs of CPU per span, and in the gateway process
that work would compete with the event loop for the GIL. Tests drive it directly.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__
from ..accounting.record import CallRecord
from ..config import Telemetry as TelemetryConfig
from .genai import DURATION_BUCKETS, TOKEN_BUCKETS, GenAIMapper

log = logging.getLogger("multihome.telemetry")

# Bucket boundaries the GenAI metric conventions specify.
MAX_TRACESTATE = 512  # W3C: at least 512 characters are propagated; a longer tracestate is dropped
_propagator = TraceContextTextMapPropagator()


class Pipeline:
    def __init__(
        self,
        config: TelemetryConfig,
        mapper: GenAIMapper,
        *,
        endpoint: str = "",
        headers: dict[str, str] | None = None,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
    ) -> None:
        cfg = self.config = config
        self.mapper = mapper
        self.failures = 0  # records the SDK refused (logged once)
        endpoint = endpoint.rstrip("/")
        headers = headers or {}
        own = {"service.name": cfg.service_name, "service.version": __version__}
        if "service.instance.id" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
            # One worker per gateway process: each process's cumulative metrics stay a series of their own.
            own["service.instance.id"] = str(uuid.uuid4())
        resource = Resource.create(own)
        exporter = span_exporter or OTLPSpanExporter(
            endpoint=endpoint + "/v1/traces", headers=headers, timeout=cfg.export_timeout_s
        )
        # ParentBased: a client's sampled traceparent is always followed; new traces keep sample_ratio.
        sampler = ParentBased(TraceIdRatioBased(cfg.sample_ratio))
        # shutdown() flushes with a deadline; no atexit handler that could hold an exit up for 30 s.
        self._tracer_provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
        self._tracer_provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=cfg.max_queue,
                schedule_delay_millis=cfg.batch_delay_ms,
                max_export_batch_size=min(512, cfg.max_queue),
                export_timeout_millis=cfg.export_timeout_s * 1000,
            )
        )
        self._tracer: Tracer | None = self._tracer_provider.get_tracer("multihome", __version__)
        self._meter_provider: MeterProvider | None = None
        self._histograms: tuple[Histogram, Histogram] | None = None  # (duration, tokens) when cfg.metrics
        if cfg.metrics:
            reader = metric_reader or PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", headers=headers, timeout=cfg.export_timeout_s),
                export_interval_millis=cfg.metrics_interval_s * 1000,
                export_timeout_millis=cfg.export_timeout_s * 1000,
            )
            self._meter_provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
            meter = self._meter_provider.get_meter("multihome", __version__)
            duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
            self._histograms = (duration, tokens)

    def record(self, call: CallRecord) -> None:
        tracer = self._tracer
        if tracer is None:
            return
        try:
            self._record(call, tracer)
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception(
                    "telemetry: could not export call %s; further failures are counted, not logged", call.request_id
                )

    def _record(self, call: CallRecord, tracer: Tracer) -> None:
        name, attrs, metric_attrs, error_type = self.mapper.describe(call)
        context = None
        if call.traceparent:
            carrier = {"traceparent": call.traceparent}
            if call.tracestate and len(call.tracestate) <= MAX_TRACESTATE:
                carrier["tracestate"] = call.tracestate
            context = _propagator.extract(carrier)
        start = int(call.started_at * 1e9)
        span = tracer.start_span(
            name,
            context=context,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=start,
            record_exception=False,
            set_status_on_exception=False,
        )
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, f"{call.outcome}: {error_type} (HTTP {call.status})"))
        span.end(end_time=max(int(call.finished_at * 1e9), start))
        if self._histograms is not None:
            duration, tokens = self._histograms
            duration.record(call.latency_ms / 1000, metric_attrs)
            usage = call.usage
            # The conventions report counted tokens only, never the gateway's estimates.
            if usage is not None and not usage.estimated:
                tokens.record(usage.prompt_tokens, {**metric_attrs, "gen_ai.token.type": "input"})
                tokens.record(usage.completion_tokens, {**metric_attrs, "gen_ai.token.type": "output"})

    def shutdown(self, deadline_s: float) -> bool:
        """Export what is queued (spans, then a final metric collection) within deadline_s.

        Runs on a daemon thread so that a collector that does not answer cannot hold the exit up;
        returns False when the deadline passed first (the rest is dropped)."""
        self._tracer = None  # records arriving from here on are not exported
        tracer_provider, meter_provider = self._tracer_provider, self._meter_provider

        def flush() -> None:
            tracer_provider.shutdown()  # the batch worker exports everything queued, then stops
            if meter_provider is not None:
                meter_provider.shutdown(timeout_millis=deadline_s * 1000)

        thread = threading.Thread(target=flush, name="multihome-telemetry-flush", daemon=True)
        thread.start()
        thread.join(deadline_s)
        return not thread.is_alive()
