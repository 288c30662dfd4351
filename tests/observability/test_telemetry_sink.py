"""The telemetry worker's pipeline against the real OpenTelemetry SDK (in-memory exporter and
metric reader): parent trace context, sampling, status, the GenAI metrics, shutdown deadline."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from builders import typed
from multihome.accounting.record import AttemptRecord, CallRecord, Usage
from multihome.config import ConfigError
from multihome.config import Telemetry as TelemetryConfig
from multihome.observability.genai import GenAIMapper
from multihome.observability.otel_pipeline import Pipeline
from multihome.observability.telemetry import parse_headers
from multihome.providers.registry import BY_NAME

from .test_genai import CONFIG, call

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
MAPPER = GenAIMapper.from_config(typed(CONFIG), BY_NAME)


def started(**cfg) -> tuple[Pipeline, InMemorySpanExporter, InMemoryMetricReader]:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    sink = Pipeline(
        TelemetryConfig(otlp_endpoint="http://unused:4318", batch_delay_ms=10, **cfg),
        MAPPER,
        span_exporter=exporter,
        metric_reader=reader,
    )
    return sink, exporter, reader


def ok_call(**kw) -> CallRecord:
    base = dict(
        deployment="gpt@az",
        usage=Usage(prompt_tokens=12, completion_tokens=30),
        latency_ms=250.0,
        attempts=(AttemptRecord("gpt@az", "ok", 240.0),),
    )
    return call(**{**base, **kw})


def test_span_is_a_client_child_of_the_callers_traceparent():
    sink, exporter, _ = started()
    sink.record(ok_call(traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01", tracestate="vendor=abc"))
    assert sink.shutdown(5)
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat gpt-4o" and span.kind is SpanKind.CLIENT
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID and span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "abc"
    assert (span.start_time, span.end_time) == (1_000_000_000_000, 1_000_500_000_000)
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["gen_ai.usage.input_tokens"] == 12 and span.attributes["gen_ai.usage.output_tokens"] == 30
    assert span.resource.attributes["service.name"] == "multihome"
    assert len(span.resource.attributes["service.instance.id"]) == 36  # one per gateway process


def test_without_traceparent_or_with_a_malformed_one_the_span_is_a_root():
    sink, exporter, _ = started(service_name="gw-eu")
    sink.record(ok_call())
    sink.record(ok_call(traceparent="00-not-a-trace-01"))
    assert sink.shutdown(5)
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and all(s.parent is None for s in spans)
    assert spans[0].context.trace_id != spans[1].context.trace_id
    assert spans[0].resource.attributes["service.name"] == "gw-eu"


def test_failed_call_has_error_status_and_type():
    sink, exporter, _ = started()
    sink.record(
        call(
            status=503,
            outcome="declined",
            error_code="all_deployments_failed",
            attempts=(AttemptRecord("gpt@az", "http_503", 1.0), AttemptRecord("gpt@oa", "http_503", 1.0)),
        )
    )
    assert sink.shutdown(5)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert "all_deployments_failed" in span.status.description and "503" in span.status.description
    assert span.attributes["error.type"] == "all_deployments_failed"


def test_sample_ratio_zero_keeps_only_traces_the_caller_sampled():
    sink, exporter, reader = started(sample_ratio=0.0)
    sink.record(ok_call(request_id="root"))
    sink.record(ok_call(request_id="sampled", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01"))
    sink.record(ok_call(request_id="unsampled", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00"))
    data = reader.get_metrics_data()
    assert sink.shutdown(5)
    assert [s.attributes["multihome.request_id"] for s in exporter.get_finished_spans()] == ["sampled"]
    # Metrics are not sampled: every call counts.
    assert _points(data, "gen_ai.client.operation.duration")[0].count == 3


def test_metrics_follow_the_genai_conventions():
    sink, _, reader = started()
    sink.record(ok_call())
    sink.record(ok_call(usage=Usage(prompt_tokens=8, completion_tokens=2)))
    sink.record(ok_call(usage=Usage(prompt_tokens=100, completion_tokens=0, estimated=True)))  # not counted
    sink.record(call(status=503, outcome="declined", error_code="all_deployments_failed", latency_ms=40.0))
    data = reader.get_metrics_data()
    assert sink.shutdown(5)
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert metrics["gen_ai.client.operation.duration"].unit == "s"
    assert metrics["gen_ai.client.token.usage"].unit == "{token}"
    durations = _points(data, "gen_ai.client.operation.duration")
    ok = next(p for p in durations if "error.type" not in p.attributes)
    failed = next(p for p in durations if p.attributes.get("error.type") == "all_deployments_failed")
    assert ok.count == 3 and ok.sum == pytest.approx(0.75) and failed.count == 1 and failed.sum == pytest.approx(0.04)
    assert ok.explicit_bounds[0] == 0.01 and ok.attributes["gen_ai.provider.name"] == "azure.ai.openai"
    tokens = {p.attributes["gen_ai.token.type"]: p for p in _points(data, "gen_ai.client.token.usage")}
    assert (tokens["input"].count, tokens["input"].sum) == (2, 20)
    assert (tokens["output"].count, tokens["output"].sum) == (2, 32)
    assert "multihome.tenant" not in tokens["input"].attributes


def test_metrics_can_be_turned_off():
    sink, exporter, reader = started(metrics=False)
    sink.record(ok_call())
    assert sink.shutdown(5)
    assert len(exporter.get_finished_spans()) == 1


def test_records_after_shutdown_are_ignored():
    sink, exporter, _ = started()
    assert sink.shutdown(5)
    sink.record(ok_call())
    assert list(exporter.get_finished_spans()) == [] and sink.failures == 0


class _Stuck(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans):
        self.release.wait(30)
        return SpanExportResult.SUCCESS


def test_shutdown_flush_has_a_deadline():
    stuck = _Stuck()
    sink = Pipeline(
        TelemetryConfig(otlp_endpoint="http://x:4318", batch_delay_ms=10, metrics=False), MAPPER, span_exporter=stuck
    )
    sink.record(ok_call())
    time.sleep(0.05)  # the batch worker is now stuck in export()
    t0 = time.monotonic()
    assert sink.shutdown(0.3) is False
    assert time.monotonic() - t0 < 15  # it gave up at its deadline; the stuck export holds for 30 s
    stuck.release.set()


def test_export_headers_are_parsed_and_errors_never_show_values():
    assert parse_headers("Authorization=Bearer%20tok,x-scope = acme ,", "V") == {
        "authorization": "Bearer tok",
        "x-scope": "acme",
    }
    with pytest.raises(ConfigError) as err:
        parse_headers("x-ok=1,secret-value-without-equals", "OTLP_HEADERS")
    assert "entry 2 of OTLP_HEADERS" in str(err.value) and "secret-value" not in str(err.value)


def _points(data, name):
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]
