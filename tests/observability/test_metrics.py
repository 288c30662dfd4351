"""The Prometheus metrics in process: tallies folded into prometheus_client equal observing one by one,
label values stay bounded (unknown model groups, deployments, tenants and codes), the exposition
parses with prometheus_client's parser, the loopback access rule refuses other hosts, and the JSON
log format writes one parseable object per line."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import replace
from decimal import Decimal

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from admin_http import running
from builders import open_door, single
from multihome.accounting.record import AttemptRecord, CallRecord, Usage
from multihome.config import ConfigError, parse_config
from multihome.metering.record import MeteredCall
from multihome.observability.genai import DURATION_BUCKETS
from multihome.observability.json_log import JsonFormatter, register_fields
from multihome.observability.logs import serve_log_config
from multihome.observability.metrics import OTHER, Metrics, Sources, _bounds, _Tally

from .test_genai import call

# test_genai's record, as a served call of group g on deployment d (any field can be overridden).
_call = functools.partial(
    call,
    model_group="g",
    deployment="d",
    attempts=(AttemptRecord("d", "ok", 1.0),),
    usage=Usage(10, 20),
    latency_ms=42.0,
)


def _metered(call: CallRecord, cost: str = "0.001") -> MeteredCall:
    return MeteredCall(call=call, cost=Decimal(cost), currency="USD", price_version="pv")


def _samples(metrics: Metrics) -> list[tuple[str, dict[str, str], float]]:
    metrics.fold()
    text = generate_latest(metrics.registry).decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def test_a_folded_tally_equals_observing_one_by_one():
    values = [0.0, 0.005, 0.01, 0.011, 0.5, 3.0, 81.92, 100.0, 1e9]
    registry = CollectorRegistry()
    one_by_one = Histogram("a", "a", ["x"], buckets=DURATION_BUCKETS, registry=registry).labels("1")
    folded = Histogram("b", "b", ["x"], buckets=DURATION_BUCKETS, registry=registry).labels("1")
    tally = _Tally(_bounds(DURATION_BUCKETS))
    for v in values:
        one_by_one.observe(v)
        tally.add(v)
    tally.fold(folded)
    tally.fold(folded)  # a second fold of an emptied tally adds nothing
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    a = [(s.name[1:], s.labels, s.value) for s in families["a"].samples]
    b = [(s.name[1:], s.labels, s.value) for s in families["b"].samples]
    assert a == b and a[-1] == ("_sum", {"x": "1"}, pytest.approx(sum(values)))


def test_counts_tokens_cost_and_attempts_per_label_set():
    metrics = Metrics(["g"], ["d", "e"], static_tenants=["acme"])
    metrics.metered(_metered(_call()))
    metrics.metered(_metered(_call(stream=True, first_byte_ms=5.0)))
    failover = _call(deployment="e", attempts=(AttemptRecord("d", "http_503", 1.0), AttemptRecord("e", "ok", 2.0)))
    metrics.metered(_metered(failover))
    samples = _samples(metrics)

    def value(name, **labels):
        return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))

    assert value("multihome_requests_total", deployment="d", status="200", outcome="ok") == 2
    assert value("multihome_requests_total", deployment="e") == 1
    assert value("gen_ai_client_operation_duration_seconds_count", gen_ai_request_model="g") == 3
    assert value("gen_ai_client_operation_duration_seconds_sum") == pytest.approx(0.126)
    assert value("gen_ai_client_operation_time_to_first_chunk_seconds_count") == 1
    assert value("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 60
    assert value("multihome_tokens_total", tenant="acme", type="input") == 30
    assert value("multihome_cost_total", tenant="acme", currency="USD") == pytest.approx(0.003)
    assert value("multihome_attempts_total", deployment="d", outcome="http_503") == 1
    assert value("multihome_attempts_total", outcome="ok") == 3
    # Folding twice counts nothing twice.
    assert _samples(metrics) == samples


def test_label_values_are_bounded_by_the_config_and_the_store():
    known: dict[str, object] = {}
    metrics = Metrics(["g"], ["d"], static_tenants=["default"])
    metrics.sources = Sources(known_tenants=lambda: known)
    for i in range(300):
        metrics.metered(
            _metered(
                _call(
                    model_group=f"group-{i}",
                    deployment=f"dep-{i}",
                    tenant=f"tenant-{i}",
                    status=400,
                    outcome="client_error",
                    error_code=f"code-{i}",
                    attempts=(AttemptRecord(f"dep-{i}", f"outcome-{i}", 1.0),),
                )
            )
        )
    samples = _samples(metrics)
    values = {v for _, labels, _ in samples for k, v in labels.items() if k not in ("le", "status")}
    assert not any(v.startswith(("group-", "dep-", "tenant-")) for v in values), values
    assert {lab["tenant"] for n, lab, _ in samples if n == "multihome_tokens_total"} == {OTHER}
    codes = {lab["code"] for n, lab, _ in samples if n == "multihome_request_errors_total"}
    assert len(codes) == 201 and OTHER in codes  # the first 200 codes, then `other`
    # A tenant the store comes to know gets its own label once the store's snapshot changes.
    later = _call(model_group="g", deployment="d", tenant="tenant-1")
    metrics.metered(_metered(later))
    known = {"tenant-1": object()}  # a new snapshot
    metrics.metered(_metered(later))
    assert "tenant-1" not in {lab.get("tenant") for _, lab, _ in _samples(metrics)}  # the cached label set
    asyncio.run(metrics.publish())  # sees the new snapshot, forgets cached label sets
    metrics.metered(_metered(later))
    assert "tenant-1" in {lab.get("tenant") for _, lab, _ in _samples(metrics)}


def test_a_code_that_does_not_look_like_one_is_other_and_takes_no_place():
    """An upstream's 4xx passes its error code on as it is: a self-hosted upstream may put anything there, a
    megabyte of the client's text included. It was a label value (one of the 200) in every scrape."""
    metrics = Metrics(["g"], ["d"], static_tenants=["acme"])
    odd = ["x" * 65, "has space", "line\nbreak", "ünïcode", ""]
    for code in [*odd, "rate_limit_exceeded", "http_503", "invalid_request_error"]:
        metrics.metered(_metered(_call(tenant="acme", status=400, outcome="client_error", error_code=code)))
    codes = {lab["code"] for n, lab, _ in _samples(metrics) if n == "multihome_request_errors_total"}
    assert codes == {OTHER, "rate_limit_exceeded", "http_503", "invalid_request_error"}
    assert len(metrics._codes.seen) == 3


def test_a_caller_naming_a_new_tenant_per_call_does_not_leave_the_label_cache_full():
    """Label sets are cached by the call's own values: a tenant the store does not know is one entry each.
    The cache stopped caching at 20,000 entries, and every later call (any tenant's) bound its labels and
    folded into prometheus_client at once. Now a full cache is folded and emptied; every call is counted."""
    from multihome.observability.metrics import _MAX_SERIES

    metrics = Metrics(["g"], ["d"], static_tenants=["acme"])
    for i in range(_MAX_SERIES + 100):
        metrics.metered(_metered(_call(tenant=f"oidc-tenant-{i}")))
    assert len(metrics._series) <= _MAX_SERIES
    metrics.metered(_metered(_call(tenant="acme")))
    assert ("chat", "g", "d", 200, "ok", "acme", None) in metrics._series
    samples = _samples(metrics)
    total = sum(v for n, _, v in samples if n == "multihome_requests_total")
    assert total == _MAX_SERIES + 101
    assert {lab["tenant"] for n, lab, _ in samples if n == "multihome_tokens_total"} == {OTHER, "acme"}


@pytest.mark.anyio
async def test_loopback_access_refuses_other_hosts_and_open_does_not():
    cfg = single(server=open_door(), metrics={"enabled": True})
    async with running(cfg) as app:
        for host, status in (("127.0.0.1", 200), ("::1", 200), ("10.1.2.3", 403), ("192.168.0.9", 403)):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=(host, 5555)), base_url="http://gw"
            ) as http:
                resp = await http.get("/metrics")
            assert resp.status_code == status, (host, resp.text)
            if status == 403:
                assert resp.json()["error"]["code"] == "metrics_forbidden"
            else:
                names = {f.name for f in text_string_to_metric_families(resp.text)}
                assert "multihome_breaker_state" in names
    cfg = single(server=open_door(), metrics={"enabled": True, "access": "open"})
    async with running(cfg) as app:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5555)), base_url="http://gw"
        ) as http:
            assert (await http.get("/metrics")).status_code == 200


@pytest.mark.anyio
async def test_no_metrics_route_unless_enabled():
    async with running(single(server=open_door())) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            assert (await http.get("/metrics")).status_code == 404


def test_metrics_and_log_format_config_are_validated():
    from builders import yaml_text

    with pytest.raises(ConfigError) as bad:
        parse_config(yaml_text(single(server=open_door(), metrics={"enabled": True, "access": "public"})))
    assert "metrics" in str(bad.value) and "access" in str(bad.value)
    with pytest.raises(ConfigError) as bad:
        parse_config(yaml_text(single(server=open_door(log_format="xml"))))
    assert "server" in str(bad.value) and "log_format" in str(bad.value)
    with pytest.raises(ConfigError):
        parse_config(yaml_text(single(server=open_door(), metrics={"enabled": True, "publish_interval_s": 0})))
    assert parse_config(yaml_text(single(server=open_door(log_format="json")))).server.log_format == "json"


def test_json_log_lines_parse_and_carry_the_registered_fields():
    config = serve_log_config("info", "json")
    assert config["formatters"]["multihome"] == {"()": "multihome.observability.json_log.JsonFormatter"}
    assert serve_log_config("info")["formatters"]["multihome"] == {
        "()": "multihome.observability.logs.TextFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
    }
    register_fields("multihome.test", ("request_id", "status"))
    formatter = JsonFormatter()
    record = logging.LogRecord("multihome.test", logging.WARNING, "f", 1, "call %s ended %d", ("req_9", 503), None)
    line = json.loads(formatter.format(record))
    assert line["level"] == "warning" and line["logger"] == "multihome.test"
    assert line["message"] == "call req_9 ended 503" and line["fields"] == {"request_id": "req_9", "status": 503}
    assert line["time"].endswith("Z") and line["time"][:4].isdigit()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("multihome.other", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
    line = json.loads(formatter.format(failed))
    assert "fields" not in line and "ValueError: boom" in line["exception"] and "\n" not in formatter.format(failed)


def test_metrics_alone_counts_from_the_tracker_as_metering_would():
    """A config that meters nothing else feeds metrics straight from the tracker (no CallRecord, float
    pricing in integers): the exposition equals the one fed through metering's MeteredCall."""
    from types import SimpleNamespace

    from multihome.accounting.tracker import Accounting, finish_failed
    from multihome.metering.service import Metering
    from multihome.observability.call_metrics import CallMetrics, attach
    from multihome.schema.errors import ApiError
    from multihome.schema.principal import Principal

    config = parse_config("""
server: {allow_unauthenticated: true}
providers:
  oa: {kind: openai, endpoint: "https://api.openai.com/v1"}
deployments:
  d: {provider: oa, model: gpt-4o, price: {input: 2.5, output: 10.0, cached_input: 1.25}}
  x: {provider: oa, model: gpt-4o-mini}
model_groups:
  g: {deployments: [x, d]}
""")
    dep = next(iter(config.deployments))
    served = SimpleNamespace(
        deployment=SimpleNamespace(
            name=dep, provider="p", adapter=SimpleNamespace(kind="openai"), region="r", data_zone=None
        ),
        attempts=(
            SimpleNamespace(deployment="x", outcome="http_503", ms=3.0, reason=None),
            SimpleNamespace(deployment=dep, outcome="ok", ms=12.5, reason=None),
        ),
        stream=SimpleNamespace(),
        status=200,
    )
    details = SimpleNamespace(cached_tokens=7)
    principal = Principal(tenant="acme", subject="key_1", source="api_key", key_id="key_1")

    def run(acc: Accounting) -> None:
        for i, tokens in enumerate((16, 1000, 123457)):
            t = acc.begin(f"req_{i}", "chat", principal, b"{}")
            assert t is not None
            t.model_group = "g"
            usage = SimpleNamespace(
                prompt_tokens=tokens, completion_tokens=i * 41, prompt_tokens_details=details, reasoning_tokens=0
            )
            t.finish(200, "ok", served=served, usage=usage, first_byte_ms=2.5)
        t = acc.begin("req_denied", "chat", principal, b"{}")
        finish_failed(t, ApiError(429, "over", code="budget_exceeded"))

    def exposition(direct: bool) -> list:
        metrics = Metrics(["g"], list(config.deployments), static_tenants=["acme"])
        metering = Metering.from_config(config)
        acc = Accounting() if direct else Accounting(sinks=[metering])
        attach(metrics, metering, acc)
        assert isinstance(acc.observer, CallMetrics) == direct and (metrics in metering.sinks) != direct
        run(acc)
        # The call's latency is real time (differs between the runs): its histogram's count only.
        samples = [s for s in _samples(metrics) if not s[0].startswith("gen_ai_client_operation_duration_seconds_")]
        durations = [s for s in _samples(metrics) if s[0] == "gen_ai_client_operation_duration_seconds_count"]
        return sorted(samples + durations, key=repr)

    direct, through_metering = exposition(True), exposition(False)
    assert direct == through_metering
    assert any(name == "multihome_cost_total" and value > 0 for name, _, value in direct)


@pytest.mark.parametrize("fails", ["hangs", "raises"])
def test_a_headroom_read_that_hangs_or_fails_leaves_the_other_series_served(monkeypatch, caplog, fails):
    """docs/metrics.md: headroom is read from the limiter's counters (Redis: bounded at 2 s); if Redis
    cannot answer, the other series are still served and a warning is logged."""
    from multihome.metering import headroom as headroom_module

    async def unreachable(limiter, tenants):
        if fails == "hangs":
            await asyncio.Event().wait()
        raise ConnectionError("Redis refused the connection")

    monkeypatch.setattr(headroom_module, "headroom", unreachable)
    metrics = Metrics(["g"], ["d"], static_tenants=["acme"])
    metrics.sources = replace(metrics.sources, limiter=object())
    metrics.metered(_metered(_call()))
    with caplog.at_level(logging.WARNING, logger="multihome"):
        body, content_type = asyncio.run(metrics.exposition(None))
    samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    assert any(n == "multihome_requests_total" and v == 1 for n, _, v in samples)
    assert not any(n == "multihome_budget_remaining" for n, _, _ in samples)
    assert "headroom not read" in caplog.text and content_type.startswith("text/plain")
