"""`GET /metrics` of a running gateway after real calls made with the official openai SDK: the
exposition parses with prometheus_client's own parser, and its counters match the calls made (a
served call, a failover, a budget refusal, a stream); an unknown model name creates no label value;
the access rule (metrics.access: key) is enforced; `--workers 2` sums both workers' calls; with
`server.log_format: json` every output line is a JSON object holding no key or content."""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from builders import identity, key_budget, price, sqlite

from .conftest import CLIENT_KEY, SECRETS, shared_config
from .processes import Gateway
from .stores import head_database

ADMIN_KEY = "mh-test-metrics-admin-key"
POOR_KEY = "mh-test-poor-client-key"
ENV = {**SECRETS, "MH_TEST_ADMIN_KEY": ADMIN_KEY, "MH_TEST_POOR_KEY": POOR_KEY}
USER = [{"role": "user", "content": "metrics must never hold this prompt 5c1d"}]
UNKNOWN = "no-such-model-e81f"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == want for k, want in labels.items()))


def _scrape(gw: Gateway, key: str | None = ADMIN_KEY) -> str:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    resp = httpx.get(gw.url + "/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def _until(gw: Gateway, check, seconds: float = 10.0):
    """Scrape until `check(samples)` holds (a call's record reaches the metrics just after its answer)."""
    deadline = time.monotonic() + seconds
    while True:
        samples = _samples(_scrape(gw))
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


@pytest.fixture(scope="module")
def metered(request, sims, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    head_database(request, "sqlite", tmp, "mh.db")  # the config's file, at the head revision
    cfg = shared_config(sims)
    cfg["server"]["api_keys_env"] = ["MH_TEST_CLIENT_KEY", "MH_TEST_POOR_KEY"]
    cfg["server"]["call_log"] = str(tmp / "calls.jsonl")
    for dep in ("az-main", "oa-main"):
        cfg["deployments"][dep]["price"] = price(2.5, 10)
    cfg["identity"] = identity("MH_TEST_ADMIN_KEY")
    cfg["storage"] = sqlite(tmp / "mh.db")
    cfg["metering"] = {"budgets": [key_budget("MH_TEST_POOR_KEY", "0.0000001")]}
    cfg["audit"] = {"dir": str(tmp / "audit")}
    cfg["metrics"] = {"enabled": True, "access": "key"}
    gw = Gateway(cfg, tmp, ENV)
    yield gw
    gw.stop()


def test_counters_match_served_failover_refused_and_streamed_calls(metered, sims):
    client = openai.OpenAI(base_url=metered.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    before = _samples(_scrape(metered))
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"x-multihome-deployments": "az-main"}
        )
    sims["azure"].fault(status=503, match="gpt-4o-main")
    failed_over = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert failed_over.headers["x-multihome-deployment"] == "oa-main"
    sims["azure"].clear_faults()
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    assert chunks
    poor = openai.OpenAI(base_url=metered.url + "/v1", api_key=POOR_KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.RateLimitError) as refused:
        poor.chat.completions.create(model="gpt-4o", messages=USER)
    assert refused.value.body["code"] == "budget_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=UNKNOWN, messages=USER)

    def delta(samples, name, **labels):
        return _value(samples, name, **labels) - _value(before, name, **labels)

    requests = "multihome_requests_total"
    after = _until(metered, lambda s: delta(s, requests, model_group="gpt-4o") >= 6)
    assert delta(after, requests, model_group="gpt-4o") == 6
    served_az = delta(after, requests, model_group="gpt-4o", deployment="az-main", status="200", outcome="ok")
    served_oa = delta(after, requests, model_group="gpt-4o", deployment="oa-main", status="200", outcome="ok")
    assert served_az + served_oa == 5 and served_oa >= 1  # the failover (and maybe the stream) on oa-main
    assert delta(after, requests, deployment="none", status="429", outcome="denied") == 1
    errors = "multihome_request_errors_total"
    assert delta(after, errors, model_group="gpt-4o", outcome="denied", code="budget_exceeded") == 1
    assert delta(after, "multihome_attempts_total", deployment="az-main", outcome="http_503") >= 1
    assert delta(after, "multihome_attempts_total", deployment="oa-main", outcome="ok") >= 1
    # Latency of every call, time to first chunk of the stream, tokens and cost of what was served.
    assert delta(after, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model="gpt-4o") == 6
    assert delta(after, "gen_ai_client_operation_time_to_first_chunk_seconds_count", gen_ai_request_model="gpt-4o") == 1
    assert delta(after, "gen_ai_client_token_usage_count", gen_ai_token_type="output") >= 5
    assert delta(after, "multihome_tokens_total", tenant="default", type="input") > 0
    assert delta(after, "multihome_cost_total", tenant="default", currency="USD") > 0
    http = "multihome_http_requests_total"
    assert delta(after, http, route="POST /v1/chat/completions", status="404") == 1  # the unknown model
    assert delta(after, http, route="POST /v1/chat/completions", status="200") == 5
    # An unknown model name is never a label value; neither is content or a key.
    text = _scrape(metered)
    assert UNKNOWN not in text and USER[0]["content"] not in text
    for secret in ENV.values():
        assert secret not in text
    # Read series: breakers of every deployment, the writers' queues and flushes, budget headroom.
    assert _value(after, "multihome_breaker_state", deployment="az-main") in (0.0, 1.0, 2.0)
    for writer in ("usage", "audit", "call_log"):
        assert any(n == "multihome_writer_queue_depth" and lab["writer"] == writer for n, lab, _ in after), writer
    flushed = _until(
        metered,
        lambda s: all(
            _value(s, "multihome_writer_flush_duration_seconds_count", writer=w) > 0
            for w in ("usage", "audit", "call_log")
        ),
    )
    for w in ("usage", "audit", "call_log"):
        assert _value(flushed, "multihome_writer_flush_duration_seconds_count", writer=w) > 0, w
    # The refused call reserved nothing: the tiny budget is all left (it refuses any call's reservation).
    left = [v for n, lab, v in after if n == "multihome_budget_remaining" and lab["id"] == "env:MH_TEST_POOR_KEY"]
    assert left == [pytest.approx(1e-7)], left


def test_the_access_rule_is_enforced(metered):
    assert httpx.get(metered.url + "/metrics").status_code == 401
    assert httpx.get(metered.url + "/no/such/path-5e2a").status_code == 404
    member = httpx.get(metered.url + "/metrics", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert member.status_code == 403 and member.json()["error"]["code"] == "metrics_forbidden"
    text = _scrape(metered, ADMIN_KEY)
    assert "/no/such/path-5e2a" not in text  # a path nothing serves is `unmatched`, never a label value
    samples = _samples(text)
    assert _value(samples, "multihome_http_requests_total", route="unmatched", status="404") >= 1
    assert _value(samples, "multihome_http_requests_total", route="GET /metrics", status="401") >= 1
    assert _value(samples, "multihome_http_requests_total", route="GET /metrics", status="403") >= 1


def test_two_workers_sum_their_calls_and_log_json(sims, tmp_path):
    cfg = shared_config(sims)
    cfg["metrics"] = {"enabled": True, "access": "loopback", "publish_interval_s": 0.2}
    cfg["server"]["log_format"] = "json"
    runs = Path(tempfile.gettempdir())
    before = set(runs.glob("multihome-metrics-*"))
    gw = Gateway(cfg, tmp_path, SECRETS, "--workers", "2")
    try:
        made = set(runs.glob("multihome-metrics-*")) - before  # this run's PROMETHEUS_MULTIPROC_DIR
        assert len(made) == 1, made
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
        ids = set()
        for _ in range(24):
            # A new connection per call: the kernel spreads connections over both workers.
            with httpx.Client() as http:
                fresh = client.with_options(http_client=http)
                raw = fresh.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
                ids.add(raw.headers["x-request-id"])

        # Whichever worker answers a scrape, it reports both workers' calls.
        def all_folded(s) -> bool:  # a worker folds its series one after another: a scrape may fall in between
            return (
                _value(s, "multihome_requests_total", model_group="gpt-4o") >= 24
                and _value(s, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model="gpt-4o") >= 24
            )

        for _ in range(8):
            samples = _until(gw, all_folded)
            assert _value(samples, "multihome_requests_total", model_group="gpt-4o", status="200") == 24
            assert (
                _value(samples, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model="gpt-4o") == 24
            )
            assert {lab["deployment"] for n, lab, _ in samples if n == "multihome_breaker_state"} >= {
                "az-main",
                "oa-main",
            }
        # Both workers served calls (each writes its counters to counter_<pid>.db): the sums above are sums.
        assert len(list(next(iter(made)).glob("counter_*.db"))) == 2
    finally:
        output = gw.stop()
    assert not any(d.exists() for d in made), "the run's metrics directory is removed when the server stops"
    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert sum("multihome listening on" in r["message"] for r in records) == 2  # one per worker
    access = [r for r in records if r["logger"] == "multihome.access"]
    assert {r["fields"]["request_id"] for r in access} >= ids
    sample = next(r for r in access if r["fields"]["request_id"] in ids)
    assert sample["fields"]["tenant"] == "default" and sample["fields"]["model_group"] == "gpt-4o"
    assert sample["fields"]["status"] == 200 and sample["fields"]["principal"] == "env:MH_TEST_CLIENT_KEY"
    assert USER[0]["content"] not in output
    for secret in SECRETS.values():
        assert secret not in output


METRICS_DOC = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
# What Prometheus itself sends (its default scrape_protocols), and the text format 1.0.0 alone.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def documented_metrics() -> dict[str, tuple[str, str]]:
    """docs/metrics.md's tables: metric name -> (type, the labels cell)."""
    out = {}
    for line in METRICS_DOC.splitlines():
        row = re.match(r"\| `([a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", line)
        if row:
            out[row[1]] = (row[2], row[3])
    return out


def test_every_documented_series_is_exposed_with_its_type_and_labels_in_every_format(metered):
    """The names, types and label names of docs/metrics.md's tables are the exposition's; and the page parses
    as each format a scraper may ask for (plain GET, text 1.0.0, and Prometheus's own Accept: OpenMetrics)."""
    documented = documented_metrics()
    assert len(documented) >= 17, sorted(documented)
    client = openai.OpenAI(base_url=metered.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    assert list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))  # a label set for each
    _until(metered, lambda s: _value(s, "gen_ai_client_operation_time_to_first_chunk_seconds_count") >= 1)
    families = {f.name: f for f in text_string_to_metric_families(_scrape(metered))}
    for name, (kind, labels_cell) in documented.items():
        family = families.get(name[: -len("_total")] if kind == "counter" else name)
        assert family is not None, f"{name} (docs/metrics.md) is not exposed"
        assert family.type == kind, (name, family.type)
        exposed = {label for sample in family.samples for label in sample.labels} - {"le"}
        named = set(re.findall(r"`([a-z_]+)`", labels_cell))
        assert exposed <= named, f"{name}: labels {sorted(exposed - named)} are not in docs/metrics.md"

    # Buckets (docs/metrics.md): durations 0.01 s to 81.92 s doubling, time to first chunk 1 ms to 10 s,
    # tokens 1 to 67,108,864 by powers of four.
    def bounds(name: str) -> list[float]:
        found = {float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")}
        return sorted(found - {float("inf")})

    assert bounds("gen_ai_client_operation_duration_seconds") == pytest.approx([0.01 * 2**i for i in range(14)])
    ttfc = bounds("gen_ai_client_operation_time_to_first_chunk_seconds")
    assert (ttfc[0], ttfc[-1]) == (0.001, 10.0)
    assert bounds("gen_ai_client_token_usage") == [4.0**i for i in range(14)]
    documented_names = {n[: -len("_total")] if k == "counter" else n for n, (k, _) in documented.items()}
    undocumented = sorted(n for n in families if n.startswith(("multihome_", "gen_ai_")) and n not in documented_names)
    assert not undocumented, f"exposed but not in docs/metrics.md: {undocumented}"

    for accept, wanted, parse in (
        ("text/plain;version=1.0.0;escaping=allow-utf-8", "text/plain; version=1.0.0", text_string_to_metric_families),
        (PROMETHEUS_ACCEPT, "application/openmetrics-text; version=1.0.0", openmetrics_families),
    ):
        resp = httpx.get(
            metered.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}", "accept": accept}, timeout=10
        )
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(wanted), resp.headers
        parsed = {f.name for f in parse(resp.text)}
        assert {"multihome_requests", "gen_ai_client_operation_duration_seconds"} <= parsed, sorted(parsed)
    plain = httpx.get(metered.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    # "/metrics is not written to the access log (like the health probes)": scrapes above, none logged.
    assert "multihome.access: GET /metrics" not in metered.output()


def test_a_multiproc_dir_the_operator_sets_is_emptied_at_each_start_and_kept(sims, tmp_path):
    """docs/metrics.md: with PROMETHEUS_MULTIPROC_DIR set, `serve` deletes the `*.db` files in it at start-up
    (files of an earlier run would be added to this one) and leaves the directory in place; a single-process
    `serve` uses it too. Three runs on one directory (one process, two workers, one process again): each
    scrape counts only its own run's calls. (A single process used to add the earlier runs' counts.)"""
    chosen = tmp_path / "prom"
    cfg = shared_config(sims)
    cfg["metrics"] = {"enabled": True, "access": "loopback", "publish_interval_s": 0.2}
    env = {**SECRETS, "PROMETHEUS_MULTIPROC_DIR": str(chosen)}
    for run, (workers, calls) in enumerate([("1", 3), ("2", 2), ("1", 1)]):
        (tmp_path / f"run{run}").mkdir()
        gw = Gateway(cfg, tmp_path / f"run{run}", env, "--workers", workers)
        try:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
            for _ in range(calls):
                client.chat.completions.create(model="gpt-4o", messages=USER)
            _until(gw, lambda s, n=calls: _value(s, "multihome_requests_total", model_group="gpt-4o") >= n)
            time.sleep(0.5)  # the workers publish twice more: nothing of an earlier run may show up late either
            counted = _samples(_scrape(gw, None))
            assert _value(counted, "multihome_requests_total", model_group="gpt-4o") == calls, (run, workers)
        finally:
            gw.stop()
        assert chosen.is_dir() and list(chosen.glob("*.db")), "the chosen directory and its files are kept"
