"""Every call leaves one record (server.call_log): who, what, where, outcome, tokens and hashes —
never the content or a secret."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY, SECRETS, shared_config
from .processes import Gateway

USER = [{"role": "user", "content": "a private question about the weather"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def logged(sims, tmp_path):
    path = tmp_path / "calls.jsonl"
    cfg = shared_config(sims)
    cfg["server"]["call_log"] = str(path)
    gw = Gateway(cfg, tmp_path, SECRETS)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    yield gw, client, path
    gw.stop()


def _records(path, n, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)
    raise AssertionError(f"expected {n} call records, found {len(lines)}")


def test_unary_stream_failover_and_failure_are_recorded(logged, sims):
    gw, client, path = logged
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    reply = raw.parse()
    stream = list(
        client.chat.completions.create(model="gpt-4o", messages=USER, stream=True, tools=[TOOL], tool_choice="required")
    )
    sims["azure"].fault(status=503, match="gpt-4o-main")
    client.chat.completions.create(model="gpt-4o", messages=USER)
    sims["openai"].fault(status=503)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    records = _records(path, 4)
    unary, streamed, failover, failed = records

    assert unary["request_id"] == raw.headers["x-request-id"]
    assert unary["outcome"] == "ok" and unary["status"] == 200 and unary["deployment"] == "az-main"
    assert unary["provider_kind"] == "azure" and unary["region"] == "eastus" and unary["data_zone"] == "US"
    assert unary["usage"]["prompt_tokens"] == reply.usage.prompt_tokens
    assert unary["usage"]["completion_tokens"] == reply.usage.completion_tokens and not unary["usage"]["estimated"]
    assert unary["response_sha256"] == hashlib.sha256(raw.http_response.content).hexdigest()
    assert unary["tenant"] == "default" and unary["subject"] == "env:MH_TEST_CLIENT_KEY"

    call_id = next(c.choices[0].delta.tool_calls[0].id for c in stream if c.choices and c.choices[0].delta.tool_calls)
    assert streamed["stream"] is True and streamed["outcome"] == "ok"
    assert streamed["tool_calls"] == [["get_weather", call_id]]
    assert streamed["usage"]["completion_tokens"] > 0 and streamed["first_byte_ms"] is not None

    assert [a["outcome"] for a in failover["attempts"]] == ["http_503", "http_503", "ok"]
    assert failover["deployment"] == "oa-main"

    assert failed["outcome"] == "declined" and failed["status"] == 503 and failed["deployment"] is None
    assert failed["error_code"] == "all_deployments_failed" and len(failed["attempts"]) == 4

    text = path.read_text()
    assert "private question" not in text and CLIENT_KEY not in text
    assert all(s not in text for s in SECRETS.values())


def test_client_disconnect_is_recorded_as_cancelled(logged, sims):
    gw, client, path = logged
    sims["openai"].fault(chunks=200, chunk_delay_ms=50, match="solo")
    body = {"model": "solo", "messages": USER, "stream": True}
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    ) as resp:
        next(line for line in resp.iter_lines() if line.startswith("data:"))
    (record,) = _records(path, 1)
    assert record["outcome"] == "cancelled" and record["usage"]["completion_tokens"] >= 0
