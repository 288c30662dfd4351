"""What a refused call's client sees, as docs/metering.md promises it, through the official SDKs: a
key's rate limit (requests and tokens) answers 429 `type: requests|tokens`, `code: rate_limit_exceeded`,
the message "Rate limit reached for key k on requests per min (RPM): Limit L, Used U, Requested R.
Please try again in Ns." with `Retry-After`, `retry-after-ms` and the `x-ratelimit-*` headers; an
admitted call carries the `x-ratelimit-*` headers; a used-up budget names itself and when it resets,
and its `Retry-After` points at the next period."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anthropic
import openai
import pytest

from builders import api_keys, config, deployment, groups, key_budget, price, simulated

from .helpers import in_one_minute
from .processes import Gateway, Simulator

SECRETS = {
    "MH_RF_R1": "mh-refusals-requests-1",
    "MH_RF_R2": "mh-refusals-requests-2",
    "MH_RF_R3": "mh-refusals-requests-3",
    "MH_RF_T1": "mh-refusals-tokens-1",
    "MH_RF_T2": "mh-refusals-tokens-2",
    "MH_RF_A1": "mh-refusals-anthropic-1",
    "MH_RF_A2": "mh-refusals-anthropic-2",
    "MH_RF_DAY": "mh-refusals-day-budget",
    "MH_RF_C1": "mh-refusals-count-tokens-1",
    "MH_RF_C2": "mh-refusals-count-tokens-2",
}
RPM, TPM = 2, 100
HI = [{"role": "user", "content": "hi"}]
GO = r"(\d+m)?\d+(\.\d+)?(ms|s)"  # a Go duration, as OpenAI writes its reset times


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("refusals")
    sim = Simulator("openai", "refusals-openai")
    rates = [{"scope": "key", "id": f"env:{env}", "requests_per_minute": RPM} for env in SECRETS if env[6] in "RAC"] + [
        {"scope": "key", "id": f"env:{env}", "tokens_per_minute": TPM} for env in SECRETS if env[6] == "T"
    ]
    gw = None
    try:
        gw = Gateway(
            config(
                server=api_keys(*SECRETS),
                metering={"budgets": [key_budget("MH_RF_DAY", "0.0000001", period="day")], "rate_limits": rates},
                providers={"oa": simulated("openai", sim.url)},
                deployments={"oa": deployment("oa", "gpt-r", price=price(1000, 2000))},
                model_groups=groups({"gpt": "oa"}, retries=0),
            ),
            tmp,
            SECRETS,
        )
        yield gw
    finally:
        log = gw.stop() if gw is not None else ""
        sim.stop()
        assert "Traceback" not in log, log[-3000:]


def _openai(gateway: Gateway, env: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=SECRETS[env], max_retries=0, timeout=20)


def _ratelimit_headers(headers, kind: str, limit: int) -> None:
    assert headers[f"x-ratelimit-limit-{kind}"] == str(limit)
    assert 0 <= int(headers[f"x-ratelimit-remaining-{kind}"]) <= limit
    assert re.fullmatch(GO, headers[f"x-ratelimit-reset-{kind}"]), headers[f"x-ratelimit-reset-{kind}"]


def test_a_keys_requests_per_minute_refusal_says_what_and_when(gateway):
    def run(env: str):
        client = _openai(gateway, env)
        admitted = [client.chat.completions.with_raw_response.create(model="gpt", messages=HI) for _ in range(RPM)]
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt", messages=HI)
        return admitted, refused.value

    admitted, err = in_one_minute(run, ["MH_RF_R1", "MH_RF_R2", "MH_RF_R3"])
    for i, raw in enumerate(admitted):
        _ratelimit_headers(raw.headers, "requests", RPM)
        assert raw.headers["x-ratelimit-remaining-requests"] == str(RPM - 1 - i)
    assert err.status_code == 429 and err.type == "requests" and err.code == "rate_limit_exceeded"
    assert re.fullmatch(
        rf"Rate limit reached for key env:MH_RF_R\d on requests per min \(RPM\): Limit {RPM}, Used {RPM}, "
        rf"Requested 1\. Please try again in {GO}\.",
        err.body["message"],
    ), err.body
    headers = err.response.headers
    retry_ms = int(headers["retry-after-ms"])
    assert 0 < retry_ms <= 60_000 and int(headers["retry-after"]) == -(-retry_ms // 1000)
    _ratelimit_headers(headers, "requests", RPM)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in headers  # the next minute cures it: the SDK may retry after retry-after


def test_a_keys_tokens_per_minute_refusal_is_of_type_tokens(gateway):
    def run(env: str):
        client = _openai(gateway, env)
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(10):  # each reserves its prompt and max_tokens: the limit is reached within a few
                client.chat.completions.create(model="gpt", messages=HI, max_tokens=40)
        return refused.value

    err = in_one_minute(run, ["MH_RF_T1", "MH_RF_T2"])
    assert err.status_code == 429 and err.type == "tokens" and err.code == "rate_limit_exceeded"
    assert re.fullmatch(
        rf"Rate limit reached for key env:MH_RF_T\d on tokens per min \(TPM\): Limit {TPM}, Used \d+, "
        rf"Requested \d+\. Please try again in {GO}\.",
        err.body["message"],
    ), err.body
    _ratelimit_headers(err.response.headers, "tokens", TPM)
    assert int(err.response.headers["retry-after"]) >= 1


def test_the_anthropic_sdk_gets_a_rate_limit_error_with_the_same_headers(gateway):
    def run(env: str):
        client = anthropic.Anthropic(base_url=gateway.url, api_key=SECRETS[env], max_retries=0, timeout=20)
        for _ in range(RPM):
            client.messages.create(model="gpt", max_tokens=10, messages=HI)
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.create(model="gpt", max_tokens=10, messages=HI)
        return refused.value

    err = in_one_minute(run, ["MH_RF_A1", "MH_RF_A2"])
    assert err.status_code == 429 and err.body["type"] == "error"
    assert err.body["error"]["type"] == "rate_limit_error"
    assert err.body["error"]["message"].startswith("Rate limit reached for key env:MH_RF_A")
    assert err.request_id and err.request_id == err.response.headers["x-request-id"]
    headers = err.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    _ratelimit_headers(headers, "requests", RPM)


def test_a_used_up_budget_names_itself_and_its_reset_and_retry_after_points_there(gateway):
    with pytest.raises(openai.RateLimitError) as refused:
        _openai(gateway, "MH_RF_DAY").chat.completions.create(model="gpt", messages=HI)
    asked = time.time()
    err = refused.value
    assert err.type == "insufficient_quota" and err.code == "budget_exceeded"
    midnight = (datetime.fromtimestamp(asked, UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    message = err.body["message"]
    assert message.startswith("Budget exceeded: key env:MH_RF_DAY's daily budget of 0.0000001 USD is used up"), message
    assert re.search(r"this call could cost up to \d+\.\d{6} USD\)", message), message  # an amount names its currency
    # Which period's end: the next UTC midnight (unless the call straddled it).
    ends = re.search(r"It resets at (\S+Z)\.", message)
    assert ends, message
    reset = datetime.strptime(ends.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert reset in (midnight, midnight - timedelta(days=1)), (reset, midnight)
    headers = err.response.headers
    assert headers["x-should-retry"] == "false"
    wait = int(headers["retry-after"])
    assert abs((asked + wait) - reset.timestamp()) <= 30, (wait, reset)
    assert abs(int(headers["retry-after-ms"]) / 1000 - wait) <= 1


def test_count_tokens_spends_no_rate_limit(gateway):
    """docs/anthropic-front-door.md: count_tokens is an estimate; nothing is metered. Twice a minute's
    requests of counting leave the whole minute's requests for messages."""

    def run(env: str) -> None:
        client = anthropic.Anthropic(base_url=gateway.url, api_key=SECRETS[env], max_retries=0, timeout=20)
        for _ in range(2 * RPM):
            assert client.messages.count_tokens(model="gpt", messages=HI).input_tokens > 0
        for _ in range(RPM):
            client.messages.create(model="gpt", max_tokens=10, messages=HI)

    in_one_minute(run, ["MH_RF_C1", "MH_RF_C2"])
