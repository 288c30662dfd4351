"""Primary-first failover, driven by the simulators' fault knobs and checked at the simulators."""

from __future__ import annotations

import time

import openai
import pytest

USER = [{"role": "user", "content": "Hello there"}]


def _outcomes(raw) -> list[tuple[str, str]]:
    items = [part.split(";") for part in raw.headers["x-multihome-attempts"].split(", ")]
    return [(item[0], item[1].removeprefix("outcome=")) for item in items]


def test_primary_down_secondary_serves(client, sims):
    sims["azure"].fault(status=503, match="gpt-4o-main")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "oa-main"
    assert _outcomes(raw) == [("az-main", "http_503"), ("az-main", "http_503"), ("oa-main", "ok")]
    assert raw.parse().choices[0].message.content


def test_primary_recovers_and_takes_traffic_back(client, sims):
    sims["azure"].fault(status=500, match="gpt-4o-main", times=2)
    first = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    again = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert first.headers["x-multihome-deployment"] == "oa-main"
    assert again.headers["x-multihome-deployment"] == "az-main"


def test_throttle_backs_off_honouring_retry_after_then_succeeds(client, sims):
    sims["azure"].fault(throttle=0.4, match="gpt-4o-main", times=1)
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    elapsed = time.perf_counter() - started
    assert _outcomes(raw) == [("az-main", "http_429"), ("az-main", "ok")]
    assert elapsed >= 0.4  # waited for Retry-After before retrying the same deployment


def test_long_retry_after_moves_on_at_once(client, sims):
    sims["azure"].fault(throttle=30, match="gpt-4o-main")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert _outcomes(raw) == [("az-main", "http_429"), ("oa-main", "ok")]


def test_client_error_does_not_fail_over(client, sims):
    sims["azure"].fault(status=400, match="gpt-4o-main")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert "az-main" in info.value.message
    assert sims["openai"].stats()["requests"] == 0
    assert len(sims["azure"].requests()) == 1


def test_upstream_auth_failure_is_not_blamed_on_the_client(client, sims):
    sims["azure"].fault(status=401, match="gpt-4o-main")
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert info.value.status_code == 502
    assert "credentials" in info.value.message
    assert sims["openai"].stats()["requests"] == 0


def test_prompt_content_filter_returns_to_client_by_default(client, sims):
    sims["azure"].fault(content_filter="prompt", match="gpt-4o-main")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert info.value.code == "content_filter"
    assert sims["openai"].stats()["requests"] == 0


def test_prompt_content_filter_fails_over_where_configured(client, sims):
    sims["azure"].fault(content_filter="prompt", match="gpt-4o-strict")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-strict", messages=USER)
    assert _outcomes(raw) == [("az-strict", "content_filter"), ("oa-strict", "ok")]


def test_output_content_filter(client, sims):
    sims["azure"].fault(content_filter="output")
    plain = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert plain.choices[0].finish_reason == "content_filter"
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-strict", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "oa-strict"
    assert raw.parse().choices[0].finish_reason == "stop"


def test_latency_beyond_first_byte_timeout_fails_over(client, sims):
    sims["azure"].fault(latency_ms=3000, match="gpt-4o-main")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert _outcomes(raw)[0] == ("az-main", "timeout")
    assert raw.headers["x-multihome-deployment"] == "oa-main"


def test_small_latency_is_just_slower(client, sims):
    sims["azure"].fault(latency_ms=150, match="gpt-4o-main")
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "az-main"
    assert time.perf_counter() - started >= 0.15


def test_hanging_upstream_times_out_and_fails_over(client, sims):
    sims["azure"].fault(hang=1, match="gpt-4o-main")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert [o for _, o in _outcomes(raw)] == ["timeout", "timeout", "ok"]
    # The abandoned upstream calls were closed, not left open.
    deadline = time.monotonic() + 60
    while sims["azure"].stats()["cancelled"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sims["azure"].stats()["cancelled"] >= 2


def test_connection_cut_fails_over(client, sims):
    sims["azure"].fault(cut_after=0, match="gpt-4o-main")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "oa-main"
    assert _outcomes(raw)[0][1] in ("disconnected", "connection_error")


def test_every_deployment_down_is_503_naming_each_attempt(client, sims):
    sims["azure"].fault(status=503)
    sims["openai"].fault(status=502)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert info.value.status_code == 503
    assert info.value.code == "all_deployments_failed"
    for fragment in ("az-main: http_503", "oa-main: http_502"):
        assert fragment in info.value.message


def test_every_deployment_throttled_is_429_with_retry_after(client, sims):
    sims["azure"].fault(throttle=20)
    sims["openai"].fault(throttle=20)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_embeddings_fail_over(client, sims):
    sims["azure"].fault(status=503, match="embed-az")
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hello")
    assert raw.headers["x-multihome-deployment"] == "oa-embed"
