"""OpenTelemetry export (telemetry:): the real gateway sends one GenAI CLIENT span per call, and the
GenAI client metrics, over OTLP/HTTP to a receiver this test runs, which decodes them with the
official protobuf classes (opentelemetry-proto)."""

from __future__ import annotations

import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .conftest import CLIENT_KEY, SECRETS, shared_config
from .helpers import until
from .processes import Gateway

WORKER = "multihome.observability.telemetry_worker"  # the export worker's module

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
OTLP_SECRET = "otlp-secret-token-789"
ENV = {**SECRETS, "MH_TEST_OTLP_HEADERS": f"x-otlp-token={OTLP_SECRET},x-scope=e2e"}
PROMPT = "my confidential prompt about the merger"


def telemetry_config(sims, endpoint: str, batch_delay_ms: int = 50, metrics_interval_s: float = 0.2) -> dict:
    """The shared gateway's config, exporting to the OTLP receiver at `endpoint`."""
    return {
        **shared_config(sims),
        "telemetry": {
            "otlp_endpoint": endpoint,
            "headers_env": "MH_TEST_OTLP_HEADERS",
            "service_name": "multihome-e2e",
            "batch_delay_ms": batch_delay_ms,
            "metrics_interval_s": metrics_interval_s,
        },
    }


class Receiver:
    """A minimal OTLP/HTTP receiver: POST /v1/traces and /v1/metrics, protobuf bodies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces":
                    decoded, reply = ExportTraceServiceRequest.FromString(body), ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    decoded, reply = ExportMetricsServiceRequest.FromString(body), ExportMetricsServiceResponse()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.raw.append(body)
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    (receiver.traces if self.path == "/v1/traces" else receiver.metrics).append(decoded)
                out = reply.SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[dict, Span]]:
        """(resource attributes, span) for every span received so far."""
        with self.lock:
            requests = list(self.traces)
        return [
            (attrs(rs.resource), span)
            for req in requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def span(self, request_id: str, seconds: float = 60.0) -> tuple[dict, Span]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = [(r, s) for r, s in self.spans() if attrs(s).get("multihome.request_id") == request_id]
            if found:
                assert len(found) == 1, "one span per call"
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no span for {request_id}")

    def points(self, name: str) -> list:
        with self.lock:
            requests = list(self.metrics)
        return [
            (m, p)
            for req in requests
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for p in m.histogram.data_points
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


def attrs(item) -> dict:
    return {kv.key: value(kv.value) for kv in item.attributes}


def start_gateway(sims, tmp, receiver: Receiver, batch_delay_ms=50, metrics_interval_s=0.2) -> Gateway:
    return Gateway(telemetry_config(sims, receiver.url, batch_delay_ms, metrics_interval_s), tmp, ENV)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traced(sims, receiver, tmp_path_factory):
    gw = start_gateway(sims, tmp_path_factory.mktemp("otel"), receiver)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    yield gw, client
    log = gw.stop()
    for secret in [*ENV.values(), OTLP_SECRET]:
        assert secret not in log, "a secret reached the gateway's log"


def test_chat_span_is_a_child_of_the_callers_traceparent(traced, receiver, sims):
    gw, client = traced
    before = time.time_ns()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"},
    )
    reply = raw.parse()
    resource, span = receiver.span(raw.headers["x-request-id"])

    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert span.trace_state == "rojo=00f067aa0ba902b7"
    assert span.name == "chat gpt-4o" and span.kind == Span.SPAN_KIND_CLIENT
    assert span.status.code == Status.STATUS_CODE_UNSET
    assert before <= span.start_time_unix_nano <= span.end_time_unix_nano <= time.time_ns()
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.provider.name"] == "azure.ai.openai" and a["gen_ai.response.model"] == "gpt-4o-main"
    assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens > 0
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == int(sims["azure"].url.rsplit(":", 1)[1])
    assert a["multihome.deployment"] == "az-main" and a["multihome.tenant"] == "default"
    assert a["multihome.attempts"] == 1 and a["multihome.outcome"] == "ok" and a["multihome.status"] == 200
    assert a["multihome.usage.estimated"] is False and a["multihome.stream"] is False
    assert "error.type" not in a
    assert resource["service.name"] == "multihome-e2e"
    # The export headers from headers_env reached the collector.
    assert all(h.get("x-otlp-token") == OTLP_SECRET and h.get("x-scope") == "e2e" for h in receiver.headers)


def test_streamed_call_counts_the_streams_usage(traced, receiver):
    gw, client = traced
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in raw.parse() if c.usage][-1]
    _, span = receiver.span(raw.headers["x-request-id"])
    a = attrs(span)
    assert a["multihome.stream"] is True and a["multihome.first_byte_ms"] >= 0
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert span.parent_span_id == b""  # no traceparent sent: a new trace


def test_failed_call_span_has_error_status(traced, receiver, sims):
    gw, client = traced
    sims["azure"].fault(status=503)
    sims["openai"].fault(status=503)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], extra_headers={"traceparent": TRACEPARENT}
        )
    _, span = receiver.span(exc.value.response.headers["x-request-id"])
    a = attrs(span)
    assert span.status.code == Status.STATUS_CODE_ERROR and "all_deployments_failed" in span.status.message
    assert a["error.type"] == "all_deployments_failed" and a["multihome.outcome"] == "declined"
    assert a["multihome.status"] == 503 and a["multihome.attempts"] == 4
    assert a["multihome.attempts.outcomes"] == ["http_503"] * 4
    assert a["gen_ai.provider.name"] == "openai"  # the last deployment tried
    assert not any(k.startswith("gen_ai.usage") for k in a) and "multihome.deployment" not in a
    assert span.trace_id.hex() == TRACE_ID


def test_embeddings_span(traced, receiver):
    gw, client = traced
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=[PROMPT, "second text"])
    reply = raw.parse()
    _, span = receiver.span(raw.headers["x-request-id"])
    a = attrs(span)
    assert span.name == "embeddings text-embedding-3-small" and a["gen_ai.operation.name"] == "embeddings"
    assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens > 0
    assert a["gen_ai.provider.name"] == "azure.ai.openai" and a["gen_ai.response.model"] == "embed-az"


def test_genai_metrics_are_exported(traced, receiver):
    gw, client = traced
    replies = [
        client.chat.completions.create(model="solo", messages=[{"role": "user", "content": f"metric {i}"}])
        for i in range(3)
    ]
    prompt = sum(r.usage.prompt_tokens for r in replies)
    output = sum(r.usage.completion_tokens for r in replies)
    deadline = time.monotonic() + 60
    while True:
        durations = [
            (m, p)
            for m, p in receiver.points("gen_ai.client.operation.duration")
            if attrs(p).get("gen_ai.request.model") == "solo"
        ]
        tokens = {
            attrs(p)["gen_ai.token.type"]: p
            for m, p in receiver.points("gen_ai.client.token.usage")
            if attrs(p).get("gen_ai.request.model") == "solo"
        }
        # Cumulative temporality: the latest export holds every call so far.
        if durations and durations[-1][1].count == 3 and tokens.get("output") and tokens["output"].count == 3:
            break
        assert time.monotonic() < deadline, "no metrics for the three calls"
        time.sleep(0.05)
    metric, point = durations[-1]
    assert metric.unit == "s" and 0 < point.sum < 10
    assert attrs(point)["gen_ai.provider.name"] == "openai" and attrs(point)["gen_ai.response.model"] == "solo"
    assert (tokens["input"].sum, tokens["output"].sum) == (prompt, output)


def test_no_content_and_no_secret_is_exported(traced, receiver):
    gw, client = traced
    secret_prompt = "zebra-7731 launch codes for the quarterly plan"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": secret_prompt}]
    )
    reply = raw.parse()
    emb = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=secret_prompt)
    receiver.span(raw.headers["x-request-id"])
    receiver.span(emb.headers["x-request-id"])
    with receiver.lock:
        exported = b"".join(receiver.raw)
    assert b"zebra-7731" not in exported and PROMPT.encode() not in exported
    assert reply.choices[0].message.content.encode() not in exported
    for secret in [CLIENT_KEY, OTLP_SECRET, *SECRETS.values()]:
        assert secret.encode() not in exported


def test_a_request_refused_before_its_model_group_gets_no_span(traced, receiver):
    """docs/telemetry.md: one span per call that reached a model group; a request refused before that (an
    invalid key, an unknown model) gets none. A served call made after them is exported, so theirs would
    have been by then (the export queue keeps its order)."""
    gw, client = traced
    bad_key = openai.OpenAI(base_url=gw.url + "/v1", api_key="mh-wrong-key-3b9d", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError) as no_key:
        bad_key.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as no_model:
        client.chat.completions.create(model="no-such-group-1c2d", messages=[{"role": "user", "content": "hi"}])
    served = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    receiver.span(served.headers["x-request-id"])
    refused = {e.value.response.headers["x-request-id"] for e in (no_key, no_model)}
    exported = {attrs(span).get("multihome.request_id") for _, span in receiver.spans()}
    assert not refused & exported


def test_shutdown_flushes_spans_and_metrics(sims, tmp_path):
    receiver = Receiver()
    try:
        # Nothing would be sent for a minute: only the flush at shutdown delivers.
        gw = start_gateway(sims, tmp_path, receiver, batch_delay_ms=60_000, metrics_interval_s=600)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        time.sleep(0.2)
        assert receiver.spans() == []
        t0 = time.monotonic()
        log = gw.stop(sig_timeout=60)  # not killed: what a busy machine's slow exit delivers still counts
        assert time.monotonic() - t0 < 30 and OTLP_SECRET not in log  # it did not wait out the 60 s batch delay
        _, span = receiver.span(raw.headers["x-request-id"])  # nothing is left to send it after the exit
        assert attrs(span)["gen_ai.usage.input_tokens"] == raw.parse().usage.prompt_tokens
        assert [p.count for _, p in receiver.points("gen_ai.client.operation.duration")] == [1]
    finally:
        receiver.close()


def test_a_dead_export_worker_never_fails_a_call(sims, tmp_path):
    receiver = Receiver()
    try:
        gw = start_gateway(sims, tmp_path, receiver)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
        (worker,) = until(lambda: _descendants_running(WORKER, gw.popen.pid), what="the export worker")
        os.kill(worker, signal.SIGKILL)
        time.sleep(0.2)
        replies = [
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            for _ in range(3)
        ]
        assert all(r.choices[0].message.content for r in replies)
        log = gw.stop()
        assert "export worker exited" in log
    finally:
        receiver.close()


def test_every_gateway_worker_exports_its_calls(sims, tmp_path):
    # `serve --workers 2`: each worker process runs its own export worker; every call is exported once.
    receiver = Receiver()
    gw = None
    try:
        gw = Gateway(telemetry_config(sims, receiver.url), tmp_path, ENV, "--workers", "2")
        ids = []
        for _ in range(12):  # new connections, so both workers serve some
            with openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10) as c:
                raw = c.chat.completions.with_raw_response.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
            ids.append(raw.headers["x-request-id"])
        for request_id in ids:
            receiver.span(request_id)  # exactly one span each, whichever worker served it
        until(lambda: len(_descendants_running(WORKER, gw.popen.pid)) == 2, what="an export worker per gateway worker")
    finally:
        if gw is not None:  # stopped however the test ends: a failed assert left it (and its workers) running
            gw.stop()
        receiver.close()


def _descendants_running(module: str, pid: int) -> list[int]:
    """Processes below `pid` whose command line runs `module` (one export worker per gateway worker)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            for child in open(f"/proc/{parent}/task/{task}/children").read().split():
                todo.append(int(child))
                if module in open(f"/proc/{child}/cmdline").read().replace("\0", " "):
                    found.append(int(child))
    return found


def test_otel_resource_attributes_are_added_and_may_name_the_instance(sims, tmp_path):
    """docs/telemetry.md: `OTEL_RESOURCE_ATTRIBUTES` adds resource attributes, and a `service.instance.id`
    it names replaces the random one each process draws."""
    receiver = Receiver()
    env = {**ENV, "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.instance.id=replica-7"}
    try:
        gw = Gateway(telemetry_config(sims, receiver.url), tmp_path, env)
        try:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
            resource, _ = receiver.span(raw.headers["x-request-id"])
        finally:
            gw.stop()
        assert resource["deployment.environment"] == "prod" and resource["service.instance.id"] == "replica-7"
        assert resource["service.name"] == "multihome-e2e"  # the config's, beside the variable's
    finally:
        receiver.close()
