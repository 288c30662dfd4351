"""A hostile (or broken) upstream's token counts, end to end: the official openai SDK -> the real gateway
(SQLite, then PostgreSQL) -> a stand-in Gemini and OpenAI-compatible upstream whose `usageMetadata` /
`usage` say whatever the test wants.

The counts an upstream reports are what the call is billed for, so they are the upstream's to state,
but not beyond what the books can hold: a negative count must not become a credit (Gemini's
`thoughtsTokenCount` is added to the output, so a negative one would cut it), reasoning is a part of
the output and never larger than it or below zero in any front door's answer, and a count larger than
the usage rows' columns (32-bit on PostgreSQL) must not stall the usage writer, which would leave every
later call, of every tenant, unrecorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest

from builders import api_keys, config, database, deployment, group, identity, price, simulated

from .helpers import until
from .processes import Gateway
from .stores import head_database

CLIENT_KEY, ADMIN_KEY = "mh-hostile-usage-client", "mh-hostile-usage-admin"
SECRETS = {"MH_HU_CLIENT": CLIENT_KEY, "MH_HU_ADMIN": ADMIN_KEY, "MH_HU_GEMINI": "gemini-key"}
INT32_MAX = 2**31 - 1


class _Upstream(BaseHTTPRequestHandler):
    """Gemini's generateContent or an OpenAI chat completion, with `usage` as the test set it."""

    usage: ClassVar[dict[str, Any]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if ":generateContent" in self.path:
            body: dict[str, Any] = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
                "usageMetadata": self.usage,
                "modelVersion": "gemini-2.5-flash",
            }
        else:
            body = {
                "id": "chatcmpl-hostile",
                "object": "chat.completion",
                "created": 1,
                "model": "o4-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": self.usage,
            }
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request, upstream, tmp_path_factory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp(f"hostile-usage-{request.param}")
    db = head_database(request, request.param, tmp)
    cfg = config(
        server=api_keys("MH_HU_CLIENT"),
        identity=identity("MH_HU_ADMIN"),
        storage=database(db),
        providers={
            "gemini": simulated("gemini", upstream, key_env="MH_HU_GEMINI"),
            "oai": simulated("openai", upstream),
        },
        deployments={
            "gem": deployment("gemini", "gemini-2.5-flash", price=price(1, 10)),
            "oai": deployment("oai", "o4-mini", price=price(1, 10)),
        },
        model_groups={"gem": group("gem", retries=0), "oai": group("oai", retries=0)},
    )
    gw = Gateway(cfg, tmp, SECRETS)
    yield gw
    log = gw.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def _rows(gateway: Gateway) -> dict[str, dict[str, Any]]:
    admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    data = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
    return {row["deployment"]: row for row in data}


def _answers(gateway: Gateway, client: openai.OpenAI, model: str) -> list[tuple[int, int]]:
    """(output tokens, reasoning tokens) as the chat, Responses and Anthropic doors report them."""
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}]).usage
    assert chat is not None
    out = [(chat.completion_tokens, (chat.completion_tokens_details or _NoDetails).reasoning_tokens or 0)]
    if model == "gem":  # (an OpenAI-compatible upstream's Responses calls are passed through as they are)
        resp = client.responses.create(model=model, input="x", store=False).usage
        assert resp is not None
        out.append((resp.output_tokens, resp.output_tokens_details.reasoning_tokens))
    anth = httpx.post(
        gateway.url + "/v1/messages",
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
        json={"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    ).json()["usage"]
    out.append((anth["output_tokens"], anth.get("output_tokens_details", {}).get("thinking_tokens", 0)))
    return out


class _NoDetails:
    reasoning_tokens = 0


def test_a_negative_thought_count_is_no_credit(gateway, client):
    _Upstream.usage = {"promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": -1000}
    before = _rows(gateway).get("gem", {}).get("calls", 0)
    for output, reasoning in _answers(gateway, client, "gem"):
        assert output >= 0 and 0 <= reasoning <= output
    row = until(lambda: (r := _rows(gateway).get("gem")) and r["calls"] >= before + 3 and r, what="usage rows")
    assert row["completion_tokens"] >= 0 and 0 <= row["reasoning_tokens"] <= row["completion_tokens"]
    assert not row["cost"].startswith("-")


def test_reasoning_larger_than_the_output_or_negative_is_bounded_in_every_door(gateway, client):
    for reasoning in (500, -7):
        _Upstream.usage = {
            "prompt_tokens": 5,
            "completion_tokens": 3,
            "total_tokens": 8,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        translated = _answers(gateway, client, "oai")[1:]  # the chat door passes the upstream's body through
        for output, thinking in translated:
            assert output == 3 and 0 <= thinking <= output


def test_a_count_too_large_for_the_books_does_not_stop_the_recording(gateway, client):
    _Upstream.usage = {"promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 3_000_000_000}
    client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}])
    # A sane call after it, on another deployment: recorded (the writer is not stuck on the row before).
    _Upstream.usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    before = _rows(gateway).get("oai", {}).get("calls", 0)
    client.chat.completions.create(model="oai", messages=[{"role": "user", "content": "x"}])
    until(lambda: _rows(gateway).get("oai", {}).get("calls", 0) > before, timeout=30, what="the next call recorded")
    row = _rows(gateway)["gem"]
    assert 0 <= row["reasoning_tokens"] <= row["completion_tokens"]
