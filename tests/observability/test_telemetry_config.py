"""The `telemetry:` config section, and what an absent section costs: nothing, not even an import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from multihome.accounting.tracker import Accounting
from multihome.api.pipeline import Call, begin_call
from multihome.config import ConfigError, parse_config
from multihome.schema.principal import Principal
from test_config import BASE  # the smallest valid config


def test_absent_or_empty_value_means_off():
    assert parse_config(BASE).telemetry is None
    assert parse_config(BASE + "telemetry:\n").telemetry is None


def test_defaults():
    t = parse_config(BASE + "telemetry: {otlp_endpoint: 'http://collector:4318'}").telemetry
    assert (t.service_name, t.sample_ratio, t.metrics, t.headers_env) == ("multihome", 1.0, True, None)


@pytest.mark.parametrize(
    "section, message",
    [
        ("{}", "telemetry: set one of otlp_endpoint or otlp_endpoint_env"),
        (
            "{otlp_endpoint: 'http://a:4318', otlp_endpoint_env: E}",
            "telemetry: set one of otlp_endpoint or otlp_endpoint_env",
        ),
        ("{otlp_endpoint: 'collector:4318'}", "telemetry.otlp_endpoint: must start with http:// or https://"),
        ("{otlp_endpoint: 'http://a:4318', sample_ratio: 1.5}", "telemetry.sample_ratio: must be between 0 and 1"),
        ("{otlp_endpoint: 'http://a:4318', export_timeout_s: 0}", "telemetry.export_timeout_s: must be greater than 0"),
        ("{otlp_endpoint: 'http://a:4318', sample_ratio: half}", "telemetry.sample_ratio: Expected `float`, got `str`"),
        ("{otlp_endpoint: 'http://a:4318', endpoint: x}", "telemetry: Object contains unknown field `endpoint`"),
    ],
)
def test_errors_name_the_key_path(section, message):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + f"telemetry: {section}\n")
    assert str(err.value).startswith(message)


def test_endpoint_and_headers_from_the_environment(monkeypatch):
    from multihome.app import build_app

    config = parse_config(BASE + "telemetry: {otlp_endpoint_env: MH_OTLP, headers_env: MH_OTLP_HEADERS}")
    monkeypatch.setenv("K", "client-key")
    monkeypatch.setenv("MH_OTLP", "http://collector:4318/")
    with pytest.raises(ConfigError, match="telemetry.headers_env: environment variable MH_OTLP_HEADERS is not set"):
        build_app(config)
    monkeypatch.setenv("MH_OTLP_HEADERS", "api-key=s3cr3t")
    app = build_app(config)
    (sink,) = [s for s in app.services if type(s).__name__ == "Telemetry"]
    assert sink.endpoint == "http://collector:4318" and sink._headers == {"api-key": "s3cr3t"}
    monkeypatch.setenv("MH_OTLP", "collector:4318")
    with pytest.raises(ConfigError, match="telemetry.otlp_endpoint_env: MH_OTLP must hold an http"):
        build_app(config)


def test_the_gateway_process_never_imports_opentelemetry():
    """Absent section: nothing is loaded. Present: the SDK runs in the telemetry worker process only."""
    code = f"""
import os, sys
os.environ["K"] = "k"
from multihome.app import build_app
from multihome.config import parse_config
off = build_app(parse_config({BASE!r}))
assert off.pipeline.accounting.trace_context is False and not off.pipeline.accounting.sinks
on = build_app(parse_config({BASE!r} + "telemetry: {{otlp_endpoint: 'http://127.0.0.1:9'}}"))
assert on.pipeline.accounting.trace_context is True
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _Group:
    name = "gpt-4o"


def _call() -> Call:
    call = Call(
        {
            "headers": [
                (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                (b"tracestate", b"v=1"),
            ]
        },
        b"req_1",
    )
    call.principal = Principal(tenant="t", subject="s", source="api_key")
    return call


def test_the_trace_context_is_kept_only_when_telemetry_asks_for_it():
    seen = []
    sink = type("Sink", (), {"record": lambda self, c: seen.append(c)})()
    for wanted in (False, True):
        acc = Accounting(sinks=[sink])
        acc.trace_context = wanted
        begin_call(_call(), acc, "chat", b"{}", _Group(), None).finish(200, "ok")
    off, on = seen
    assert off.traceparent is None and off.tracestate is None
    assert on.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" and on.tracestate == "v=1"


def test_the_export_worker_logs_in_the_gateway_s_log_format(monkeypatch):
    """With server.log_format: json the worker's own lines (here: a frame it cannot decode) are JSON too."""
    import json

    from multihome.app import build_app
    from multihome.observability.telemetry import _frame

    text = BASE.replace("server: {api_keys_env: [K]}", "server: {api_keys_env: [K], log_format: json}")
    monkeypatch.setenv("K", "client-key")
    app = build_app(parse_config(text + "telemetry: {otlp_endpoint: http://127.0.0.1:9}"))
    (sink,) = [s for s in app.services if type(s).__name__ == "Telemetry"]
    done = subprocess.run(
        [sys.executable, "-m", "multihome.observability.telemetry_worker"],
        input=_frame(sink._setup()) + _frame(b"\xc1 not msgpack"),
        capture_output=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in done.stderr.decode().splitlines() if line.strip()]  # every line
    assert {"time": lines[-1]["time"], "level": "error", "logger": "multihome.telemetry"}.items() <= lines[-1].items()
    assert lines[-1]["message"] == "telemetry worker: undecodable frame; stopping", done.stderr


def test_an_oversized_trace_context_is_not_kept_on_the_record():
    """A head may carry 64 KiB of each: every call record (the call log, the export queue) held it."""
    max_traceparent, max_tracestate = 256, 512  # api/pipeline.py's bounds
    seen = []
    sink = type("Sink", (), {"record": lambda self, c: seen.append(c)})()
    acc = Accounting(sinks=[sink])
    acc.trace_context = True
    parent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for headers in (
        [(b"traceparent", parent), (b"tracestate", b"v=" + b"x" * 60_000)],
        [(b"traceparent", parent + b"-" + b"f" * 60_000), (b"tracestate", b"v=1")],
        [(b"traceparent", parent + b"-ab"), (b"tracestate", b"v=" + b"x" * (max_tracestate - 2))],
    ):
        call = _call()
        call.scope = {"headers": headers}
        begin_call(call, acc, "chat", b"{}", _Group(), None).finish(200, "ok")
    long_state, long_parent, at_bounds = seen
    assert long_state.traceparent == parent.decode() and long_state.tracestate is None
    assert long_parent.traceparent is None and long_parent.tracestate is None
    assert len(at_bounds.traceparent) <= max_traceparent and len(at_bounds.tracestate) == max_tracestate
