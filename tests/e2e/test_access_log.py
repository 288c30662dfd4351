"""`multihome serve` at its default log level: one start-up line saying where it listens, and one
access-log line per call (request id, principal, model group, deployment, status, duration) that
never holds a prompt, an answer or a key. The shared gateway (conftest.py) runs with no
`--log-level`, so these are what a user sees by default."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import openai
import yaml

from .conftest import CLIENT_KEY, SECRETS, shared_config
from .processes import Gateway

PROMPT = "the access log must never see this prompt 7f3a"


def _log_after(gateway, start: int, wanted: str, timeout_s: float = 5.0) -> str:
    """The gateway's output written since `start`, once it holds `wanted` (lines are written as calls end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = gateway.output()[start:]
        if wanted in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _line(text: str, request_id: str) -> str:
    lines = [line for line in text.splitlines() if f"request_id={request_id}" in line]
    assert len(lines) == 1, f"expected one access line for {request_id}, got {lines} in:\n{text[-2000:]}"
    return lines[0]


def test_start_up_says_where_it_listens_and_what_it_serves(gateway):
    config = yaml.safe_load(Path(gateway.args[gateway.args.index("--config") + 1]).read_text())
    expected = (
        f"multihome listening on http://127.0.0.1:{gateway.port} ({len(config['deployments'])} deployments, "
        f"{len(config['model_groups'])} model groups)"
    )  # more than one of each in this config
    lines = [line for line in gateway.output().splitlines() if "multihome listening on" in line]
    assert len(lines) == 1 and lines[0].endswith(expected) and " INFO " in lines[0], lines


def test_each_call_writes_one_access_line_without_content_or_secrets(gateway, client: openai.OpenAI):
    start = len(gateway.output())
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"x-multihome-deployments": "az-main"},
    )
    answer = raw.parse().choices[0].message.content
    rid = raw.headers["x-request-id"]
    text = _log_after(gateway, start, rid)
    line = _line(text, rid)
    assert re.search(r" INFO multihome\.access: POST /v1/chat/completions 200 \d+\.\dms ", line), line
    assert "principal=env:MH_TEST_CLIENT_KEY tenant=default model_group=gpt-4o deployment=az-main" in line, line
    assert PROMPT not in text and (not answer or answer not in text)
    for secret in SECRETS.values():
        assert secret not in text


def test_streams_refusals_and_unknown_paths_are_logged_and_probes_are_not(gateway, client: openai.OpenAI):
    start = len(gateway.output())
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], stream=True
    ) as resp:
        streamed = resp.headers["x-request-id"]
        served = resp.headers["x-multihome-deployment"]
        for _ in resp.iter_lines():
            pass
    assert httpx.get(gateway.url + "/healthz").status_code == 200
    refused = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": "Bearer wrong-key-0b1c"},
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]},
    )
    missing = httpx.get(gateway.url + "/v1/nothing", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert (refused.status_code, missing.status_code) == (401, 404)
    text = _log_after(gateway, start, missing.headers["x-request-id"])
    assert "POST /v1/chat/completions 200 " in _line(text, streamed)
    assert f"model_group=gpt-4o deployment={served}" in _line(text, streamed)
    assert re.search(
        r"POST /v1/chat/completions 401 .* principal=- tenant=- model_group=- deployment=-$",
        _line(text, refused.headers["x-request-id"]),
    )
    assert "GET /v1/nothing 404 " in _line(text, missing.headers["x-request-id"])
    assert "/healthz" not in text and PROMPT not in text and "wrong-key-0b1c" not in text


def test_log_level_warning_keeps_only_problems(sims, tmp_path):
    """docs/serving.md: `--log-level warning` keeps only problems: no start-up line, no access line, for a
    served call or a refused one (the access log is off)."""
    gw = Gateway(shared_config(sims), tmp_path, SECRETS, "--log-level", "warning")
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
        served = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}]
        )
        refused = httpx.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
        assert (served.status_code, refused.status_code) == (200, 401)
        # A call made after both: once it is answered, the two before it would have been logged already.
        client.models.list()
    finally:
        output = gw.stop()
    assert "multihome.access" not in output and "multihome listening on" not in output, output[-2000:]
    assert served.headers["x-request-id"] not in output and PROMPT not in output


def test_a_streams_ms_runs_to_its_end(gateway, sims, client: openai.OpenAI):
    """docs/serving.md: `ms` is from the request's arrival to its last byte; a stream's, to its end. A
    stream of 6 chunks 150 ms apart (at least 750 ms from its first chunk to its last) is logged with at
    least that, not with its time to the first byte."""
    for sim in ("azure", "openai"):
        sims[sim].fault(chunks=6, chunk_delay_ms=150, match="gpt-4o-main")
    start = len(gateway.output())
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "count slowly"}], stream=True
    ) as resp:
        rid = resp.headers["x-request-id"]
        for _ in resp.iter_lines():
            pass
    line = _line(_log_after(gateway, start, rid), rid)
    ms = float(re.search(r" 200 ([\d.]+)ms ", line).group(1))
    assert ms >= 750, line
