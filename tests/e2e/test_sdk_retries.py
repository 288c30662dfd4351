"""What the official SDKs' retries do with the gateway's errors.

The openai and anthropic SDKs retry every 408, 409, 429 and 5xx (two retries by default) unless the
answer carries `x-should-retry: false`; the anthropic SDK also sleeps whatever `retry-after` says, however
long. An error that the same request meets again however soon it is retried (a used-up budget, a
provider rejecting the gateway's credentials, an Idempotency-Key whose answer cannot be replayed) must
say so, or every such call is sent three times and a budget refusal can hold an anthropic client
asleep until the period ends. Errors a retry can cure (a rate window, a busy conversation) keep
their retry-after. Each call counts what the SDK sent with an httpx event hook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from builders import api_keys, breakers, config, deployment, groups, key_budget, price, simulated, sqlite

from .helpers import until
from .processes import Gateway, Simulator
from .stores import head_database

SECRETS = {
    "MH_SDK_CLIENT": "mh-sdk-retries-client",
    "MH_SDK_SPENT": "mh-sdk-retries-total-budget",
    "MH_SDK_SPENT_TODAY": "mh-sdk-retries-day-budget",
    "MH_SDK_LIMITED": "mh-sdk-retries-one-a-minute",
    "MH_SDK_UPSTREAM_KEY": "sk-ant-sdk-retries-right",
    "MH_SDK_WRONG_KEY": "sk-ant-sdk-retries-wrong",
}
TINY = "0.0000001"  # less than any call costs at these prices: the first call is refused
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(request, tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("sdk-retries")
    head_database(request, "sqlite", tmp, "mh.db")  # the config's file, at the head revision
    oa = Simulator("openai", "retries-openai")
    an = Simulator("anthropic", "retries-anthropic", "--api-key-env", "MH_SDK_UPSTREAM_KEY", env=SECRETS)
    gw = None
    try:
        gw = Gateway(
            config(
                server=api_keys("MH_SDK_CLIENT", "MH_SDK_SPENT", "MH_SDK_SPENT_TODAY", "MH_SDK_LIMITED"),
                storage=sqlite(tmp / "mh.db"),
                routing=breakers(0),
                metering={
                    "budgets": [
                        key_budget("MH_SDK_SPENT", TINY, period="total"),
                        key_budget("MH_SDK_SPENT_TODAY", TINY, period="day"),
                    ],
                    "rate_limits": [{"scope": "key", "id": "env:MH_SDK_LIMITED", "requests_per_minute": 1}],
                },
                providers={
                    "oa": simulated("openai", oa.url),
                    "an": simulated("anthropic", an.url, key_env="MH_SDK_WRONG_KEY"),
                },
                deployments={"oa": deployment("oa", "gpt-r", price=price(1000, 2000)), "an": deployment("an", "c")},
                model_groups=groups({"gpt": "oa", "rejected": "an"}, retries=0),
            ),
            tmp,
            SECRETS,
        )
        gw.sim = oa  # type: ignore[attr-defined]
        yield gw
    finally:
        log = gw.stop() if gw is not None else ""
        oa.stop()
        an.stop()
        assert "Traceback" not in log, log[-3000:]


class Sent:
    """The requests an SDK client sent (its retries included), by an httpx event hook."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, request) -> None:
        self.paths.append(request.url.path)


def _openai(gateway: Gateway, env: str, sent: Sent) -> openai.OpenAI:
    http = openai.DefaultHttpxClient(event_hooks={"request": [sent]})
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=SECRETS[env], max_retries=2, timeout=20, http_client=http
    )


def _anthropic(gateway: Gateway, env: str, sent: Sent) -> anthropic.Anthropic:
    http = anthropic.DefaultHttpxClient(event_hooks={"request": [sent]})
    return anthropic.Anthropic(base_url=gateway.url, api_key=SECRETS[env], max_retries=2, timeout=20, http_client=http)


def test_a_used_up_budget_is_not_retried_by_either_sdk(gateway):
    sent = Sent()
    with pytest.raises(openai.RateLimitError) as info:
        _openai(gateway, "MH_SDK_SPENT", sent).chat.completions.create(model="gpt", messages=HI)
    assert info.value.code == "budget_exceeded" and info.value.type == "insufficient_quota"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(sent.paths) == 1, f"the openai SDK sent a refused call {len(sent.paths)} times"

    sent = Sent()
    with pytest.raises(anthropic.RateLimitError) as refused:
        _anthropic(gateway, "MH_SDK_SPENT", sent).messages.create(model="gpt", max_tokens=10, messages=HI)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert len(sent.paths) == 1, f"the anthropic SDK sent a refused call {len(sent.paths)} times"


def test_a_daily_budget_refusal_does_not_put_the_anthropic_sdk_to_sleep_until_midnight(gateway):
    """Its retry-after (seconds to the day's end) is right, and the anthropic SDK would sleep all of it."""
    refused = _anthropic(gateway, "MH_SDK_SPENT_TODAY", Sent()).with_options(max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        refused.messages.create(model="gpt", max_tokens=10, messages=HI)
    headers = info.value.response.headers
    assert int(headers["retry-after"]) >= 1 and headers["x-should-retry"] == "false"

    sent, began = Sent(), time.monotonic()
    with pytest.raises(anthropic.RateLimitError):  # with retries on, answered at once: no sleep at all
        _anthropic(gateway, "MH_SDK_SPENT_TODAY", sent).with_options(timeout=5).messages.create(
            model="gpt", max_tokens=10, messages=HI
        )
    assert len(sent.paths) == 1 and time.monotonic() - began < 60


def test_a_provider_rejecting_the_gateways_credentials_is_not_retried(gateway):
    sent = Sent()
    with pytest.raises(openai.InternalServerError) as info:
        _openai(gateway, "MH_SDK_CLIENT", sent).chat.completions.create(model="rejected", messages=HI)
    assert info.value.status_code == 502 and info.value.code == "upstream_auth_failed"
    assert len(sent.paths) == 1, f"the openai SDK sent it {len(sent.paths)} times"
    sent = Sent()
    with pytest.raises(anthropic.InternalServerError):
        _anthropic(gateway, "MH_SDK_CLIENT", sent).messages.create(model="rejected", max_tokens=10, messages=HI)
    assert len(sent.paths) == 1, f"the anthropic SDK sent it {len(sent.paths)} times"


def test_an_idempotency_key_whose_answer_cannot_be_replayed_is_not_retried(gateway):
    client = _openai(gateway, "MH_SDK_CLIENT", Sent())
    key = {"Idempotency-Key": "sdk-retries-streamed-once"}
    for _ in client.responses.create(model="gpt", input="once", stream=True, extra_headers=key):
        pass
    sent = Sent()
    with pytest.raises(openai.ConflictError) as info:  # the same request again: its stream is not kept
        _openai(gateway, "MH_SDK_CLIENT", sent).responses.create(
            model="gpt", input="once", stream=True, extra_headers=key
        )
    assert info.value.code == "idempotency_key_used"
    assert len(sent.paths) == 1, f"the openai SDK sent it {len(sent.paths)} times"


def test_a_rate_window_is_still_retryable(gateway):
    """The header is the budget's own: a 429 that the next minute cures keeps the SDK's retry (after its
    retry-after, at most a minute)."""
    limited = _openai(gateway, "MH_SDK_LIMITED", Sent()).with_options(max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(3):  # one a minute: the second is refused, or the third if the first two straddled a minute
            limited.chat.completions.create(model="gpt", messages=HI)
    assert info.value.code == "rate_limit_exceeded"
    headers = info.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60 and "x-should-retry" not in headers


def test_a_call_the_sdk_gave_up_on_is_cancelled_upstream_before_its_retry(gateway):
    """The SDK closes the connection when its timeout passes and sends the call again (a timeout is
    retried like a 5xx). Each abandoned attempt's upstream call must stop then, as a stream's does when
    its client leaves: otherwise every slow call runs, and is billed, once per attempt."""
    sim = gateway.sim
    sim.reset()
    sim.fault(latency_ms=30_000, match="gpt-r")
    try:
        sent = Sent()
        with pytest.raises(openai.APITimeoutError):
            _openai(gateway, "MH_SDK_CLIENT", sent).with_options(timeout=1).chat.completions.create(
                model="gpt", messages=HI
            )
        assert len(sent.paths) == 3
        until(lambda: sim.stats()["cancelled"] == 3, what="the three abandoned upstream calls to be cancelled")
        assert sim.stats()["completed"] == 0
    finally:
        sim.clear_faults()
