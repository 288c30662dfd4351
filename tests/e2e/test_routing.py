"""Routing policy end to end: breakers, context overflow, hedging, fallback groups, strategies,
narrowing, budgets, and explain agreeing with what the gateway then does."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from builders import api_keys, breakers, config, deployment, group, price, simulated

from .conftest import CLIENT_KEY
from .processes import Gateway, Simulator

USER = [{"role": "user", "content": "hello"}]
# An upstream this slow is one no answer waited for: far longer than any call takes on a busy machine.
SLOW_MS = 30_000
# An open breaker's cooldown: the calls a test makes while it is open fit in it on a busy machine too.
COOLDOWN_S = 5.0


def _config(a: str, b: str) -> dict:
    """Two OpenAI simulators; each deployment is named after its simulator (a-, b-) and serves the model of its name."""
    on = {"a": "pa", "b": "pb"}

    def dep(name: str, **fields) -> dict:
        return deployment(on[name[0]], name, **fields)

    return config(
        server=api_keys("MH_TEST_CLIENT_KEY"),
        routing=breakers(3, cooldown_s=COOLDOWN_S),
        providers={"pa": simulated("openai", a), "pb": simulated("openai", b)},
        deployments={
            "a-small": dep("a-small", context_window=4000),
            "b-big": dep("b-big", context_window=128000),
            "b-same": dep("b-same", context_window=4000),
            "a-nar": dep("a-nar"),
            "b-nar": dep("b-nar", capabilities=["chat", "streaming"]),
            **{n: dep(n) for n in ("a-brk", "b-brk", "a-hedge", "b-hedge", "a-p")},
            "b-p": dep("b-p", capabilities=["chat", "streaming"]),
            "b-backup": dep("b-backup"),
            "a-exp": dep("a-exp", price=price(10, 30)),
            "b-cheap": dep("b-cheap", price=price(0.1, 0.4)),
            **{n: dep(n) for n in ("a-bud", "b-bud")},
        },
        model_groups={
            "overflow": group("a-small", "b-big", retries=0),
            "overflow-3": group("a-small", "b-same", "b-big", retries=0),
            "breaker": group("a-brk", "b-brk", retries=0),
            "hedge": group("a-hedge", "b-hedge", hedge_after_ms=100, retries=0),
            # A first answer counts as fast before this on any machine, however busy.
            "hedge-late": group("a-hedge", "b-hedge", hedge_after_ms=10_000, retries=0),
            "primary": group("a-p", "b-p", retries=0, fallback_groups=["backup"]),
            "backup": group("b-backup"),
            # Only the narrowing tests call it: no breaker of its deployments is left open by another test.
            "narrowed": group("a-nar", "b-nar", retries=0, fallback_groups=["backup"]),
            "cheap": group("a-exp", "b-cheap", strategy="lowest-cost"),
            "budget": group("a-bud", "b-bud", retries=0, timeouts={"budget_s": 0.6, "first_byte_s": 5}),
        },
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    a, b = Simulator("openai", "sim-a"), Simulator("openai", "sim-b")
    gw = Gateway(_config(a.url, b.url), tmp_path_factory.mktemp("routing"), {"MH_TEST_CLIENT_KEY": CLIENT_KEY})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    yield a, b, gw, client
    gw.stop()
    a.stop()
    b.stop()


@pytest.fixture(autouse=True)
def _reset(world):
    world[0].reset()
    world[1].reset()


def _outcomes(headers) -> list[str]:
    return [
        part.split(";")[0] + ":" + part.split(";")[1].removeprefix("outcome=")
        for part in headers["x-multihome-attempts"].split(", ")
    ]


def test_context_overflow_moves_to_a_larger_window(world):
    a, b, gw, client = world
    a.fault(status=400, error_code="context_length_exceeded", match="a-small")
    raw = client.chat.completions.with_raw_response.create(model="overflow", messages=USER)
    assert _outcomes(raw.headers) == ["a-small:context_overflow", "b-big:ok"]


def test_context_overflow_skips_deployments_whose_window_is_not_larger(world):
    """docs/routing.md: context_overflow fails over, skipping deployments whose window is not larger."""
    a, b, gw, client = world
    a.fault(status=400, error_code="context_length_exceeded", match="a-small")
    raw = client.chat.completions.with_raw_response.create(model="overflow-3", messages=USER)
    assert _outcomes(raw.headers) == ["a-small:context_overflow", "b-same:skipped_window_too_small", "b-big:ok"]
    assert [r["model"] for r in b.requests()] == ["b-big"]  # the same-sized window was never called


def test_estimated_context_skips_the_small_window_before_any_call(world):
    a, b, gw, client = world
    raw = client.chat.completions.with_raw_response.create(
        model="overflow", messages=[{"role": "user", "content": "word " * 5000}]
    )
    assert raw.headers["x-multihome-deployment"] == "b-big"
    assert a.stats()["requests"] == 0


def test_breaker_opens_after_n_failures_and_closes_after_a_good_probe(world):
    a, b, gw, client = world
    a.fault(status=503, match="a-brk")
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="breaker", messages=USER)
        assert raw.headers["x-multihome-deployment"] == "b-brk"
    assert a.stats()["requests"] == 3
    # Open: the primary is skipped before any call.
    raw = client.chat.completions.with_raw_response.create(model="breaker", messages=USER)
    assert _outcomes(raw.headers) == ["a-brk:skipped", "b-brk:ok"]
    assert 'a-brk;outcome=skipped;reason="breaker open for' in raw.headers["x-multihome-attempts"]
    assert a.stats()["requests"] == 3
    explain = httpx.post(
        gw.url + "/v1/route/explain",
        json={"model": "breaker", "messages": USER},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    ).json()
    assert explain["breakers"]["a-brk"]["state"] == "open"
    # Cooldown over and the primary healthy again: one probe closes the breaker.
    a.clear_faults()
    time.sleep(COOLDOWN_S + 0.1)
    raw = client.chat.completions.with_raw_response.create(model="breaker", messages=USER)
    assert _outcomes(raw.headers) == ["a-brk:ok"]
    raw = client.chat.completions.with_raw_response.create(model="breaker", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "a-brk"


def test_failed_half_open_probe_reopens(world):
    a, b, gw, client = world
    a.fault(status=500, match="a-brk")
    for _ in range(3):
        client.chat.completions.create(model="breaker", messages=USER)
    time.sleep(COOLDOWN_S + 0.1)
    raw = client.chat.completions.with_raw_response.create(model="breaker", messages=USER)
    assert _outcomes(raw.headers) == ["a-brk:http_500", "b-brk:ok"]  # the probe failed
    raw = client.chat.completions.with_raw_response.create(model="breaker", messages=USER)
    assert _outcomes(raw.headers) == ["a-brk:skipped", "b-brk:ok"]  # open again
    a.clear_faults()
    time.sleep(COOLDOWN_S + 0.1)
    client.chat.completions.create(model="breaker", messages=USER)  # let the probe close it for later tests


def test_hedging_returns_the_faster_answer_and_cancels_the_slower_call(world):
    a, b, gw, client = world
    a.fault(latency_ms=SLOW_MS, match="a-hedge")
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="hedge", messages=USER)
    elapsed = time.perf_counter() - started
    assert raw.headers["x-multihome-deployment"] == "b-hedge"
    assert elapsed < SLOW_MS / 2000  # the answer did not wait for the slow call
    assert "a-hedge:cancelled" in _outcomes(raw.headers)
    deadline = time.monotonic() + 60
    while a.stats()["cancelled"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.stats()["cancelled"] == 1


def test_hedging_does_not_start_a_second_call_when_the_first_is_fast(world):
    a, b, gw, client = world
    raw = client.chat.completions.with_raw_response.create(model="hedge-late", messages=USER)
    assert _outcomes(raw.headers) == ["a-hedge:ok"]
    assert b.stats()["requests"] == 0


def test_fallback_group_serves_when_the_whole_group_fails(world):
    a, b, gw, client = world
    a.fault(status=503, match="a-p")
    b.fault(status=503, match="b-p")
    raw = client.chat.completions.with_raw_response.create(model="primary", messages=USER)
    assert _outcomes(raw.headers) == ["a-p:http_503", "b-p:http_503", "backup:fallback_group", "b-backup:ok"]


def test_explain_plan_equals_what_the_gateway_does(world):
    a, b, gw, client = world
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    for body in ({"model": "primary", "messages": USER}, {"model": "primary", "messages": USER, "tools": [tool]}):
        explain = httpx.post(
            gw.url + "/v1/route/explain", json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"}
        ).json()
        a.fault(status=503)
        b.fault(status=503)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(**body)
        names = [
            o.split(":")[0]
            for o in _outcomes(info.value.response.headers)
            if not o.endswith(("fallback_group", "skipped"))
        ]
        tried = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]  # same-deployment retries fold
        assert tried == explain["would_attempt"]
        a.clear_faults()
        b.clear_faults()
    assert {"deployment": "b-p", "decision": "skipped", "reason": "lacks tools"} in explain["plans"][0]["deployments"]


def test_lowest_cost_strategy(world):
    a, b, gw, client = world
    raw = client.chat.completions.with_raw_response.create(model="cheap", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "b-cheap"


def test_client_may_narrow_but_not_widen(world):
    a, b, gw, client = world
    raw = client.chat.completions.with_raw_response.create(
        model="primary", messages=USER, extra_headers={"x-multihome-deployments": "b-p"}
    )
    assert _outcomes(raw.headers) == ["a-p:skipped", "b-p:ok"]
    raw = client.chat.completions.with_raw_response.create(
        model="primary", messages=USER, extra_body={"multihome": {"route": {"deployments": ["b-p"]}}}
    )
    assert raw.headers["x-multihome-deployment"] == "b-p"
    assert all("multihome" not in str(r) for r in b.requests())
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="primary", messages=USER, extra_headers={"x-multihome-deployments": "b-cheap"}
        )
    assert info.value.code == "invalid_route_narrowing"


def test_narrowing_turns_off_fallback_groups(world):
    """docs/routing.md: narrowing also turns off fallback groups (the client said which deployments)."""
    a, b, gw, client = world
    b.fault(status=503, match="b-nar")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="narrowed", messages=USER, extra_headers={"x-multihome-deployments": "b-nar"}
        )
    assert info.value.status_code == 503 and info.value.code == "all_deployments_failed"
    assert _outcomes(info.value.response.headers) == ["a-nar:skipped", "b-nar:http_503"]
    assert [r["model"] for r in b.requests()] == ["b-nar"]  # b-backup, the fallback group's, was never called


def test_every_deployment_skipped_for_a_capability_is_a_400(world):
    """docs/routing.md: if every deployment is skipped for capabilities the answer is 400
    `unsupported_capability`, before any upstream call."""
    a, b, gw, client = world
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="narrowed", messages=USER, tools=[tool], extra_headers={"x-multihome-deployments": "b-nar"}
        )
    assert info.value.code == "unsupported_capability", info.value.body
    assert (a.stats()["requests"], b.stats()["requests"]) == (0, 0)


def test_time_budget_ends_the_walk_with_504(world):
    a, b, gw, client = world
    a.fault(latency_ms=SLOW_MS, match="a-bud")
    b.fault(latency_ms=SLOW_MS, match="b-bud")
    started = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="budget", messages=USER)
    assert info.value.status_code == 504
    assert info.value.code == "routing_budget_exhausted"
    assert time.perf_counter() - started < SLOW_MS / 2000  # the 0.6 s budget ended it, not the upstreams


def test_route_explain_cli(world):
    import subprocess

    from .processes import VENV_BIN

    a, b, gw, client = world
    out = subprocess.run(
        [str(VENV_BIN / "multihome"), "route", "explain", "cheap", "--url", gw.url, "--key", CLIENT_KEY],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert "-> b-cheap: rank 1 by lowest-cost" in out.stdout
    assert "would attempt: b-cheap -> a-exp" in out.stdout
    bad = subprocess.run(
        [str(VENV_BIN / "multihome"), "route", "explain", "nope", "--url", gw.url, "--key", CLIENT_KEY],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert bad.returncode == 1 and "does not exist" in bad.stderr


def test_context_overflow_everywhere_tells_the_client_why(world):
    a, b, gw, client = world
    a.fault(status=400, error_code="context_length_exceeded", match="a-small")
    b.fault(status=400, error_code="context_length_exceeded", match="b-big")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="overflow", messages=USER)
    assert info.value.code == "context_length_exceeded"
    assert _outcomes(info.value.response.headers) == ["a-small:context_overflow", "b-big:context_overflow"]
