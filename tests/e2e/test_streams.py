"""Streams fail over only before the first byte; afterwards they end with an error the SDK raises."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY

USER = [{"role": "user", "content": "Tell me a long story about clouds"}]


def _stream(client, model="gpt-4o", **extra):
    return client.chat.completions.with_raw_response.create(model=model, messages=USER, stream=True, **extra)


def _text(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_stream_fails_over_on_503_before_first_byte(client, sims):
    sims["azure"].fault(status=503, match="gpt-4o-main")
    raw = _stream(client)
    assert raw.headers["x-multihome-deployment"] == "oa-main"
    assert _text(raw.parse())


def test_slow_first_byte_fails_over(client, sims):
    sims["azure"].fault(first_byte_ms=3000, match="gpt-4o-main")
    raw = _stream(client)
    assert raw.headers["x-multihome-deployment"] == "oa-main"
    assert "az-main;outcome=timeout" in raw.headers["x-multihome-attempts"]
    assert _text(raw.parse())


def test_cut_after_only_the_role_preamble_fails_over(client, sims):
    """A stream that dies before producing any content has sent the client nothing yet."""
    sims["azure"].fault(cut_after=0, match="gpt-4o-main")
    raw = _stream(client)
    assert raw.headers["x-multihome-deployment"] == "oa-main"
    assert _text(raw.parse())


def test_malformed_first_event_fails_over(client, sims):
    sims["azure"].fault(malformed_at=1, match="gpt-4o-main")
    raw = _stream(client)
    assert raw.headers["x-multihome-deployment"] == "oa-main"
    assert "az-main;outcome=malformed_stream" in raw.headers["x-multihome-attempts"]


def test_cut_after_first_byte_raises_in_the_sdk(client, sims):
    sims["openai"].fault(cut_after=3, chunks=10, chunk_delay_ms=20, match="solo")
    raw = _stream(client, model="solo")
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in raw.parse():
            received.append(chunk)
    assert received, "the client got the chunks produced before the cut"
    assert "broke after" in info.value.message and "oa-solo" in info.value.message


def test_malformed_chunk_mid_stream_raises_in_the_sdk(client, sims):
    sims["openai"].fault(malformed_at=4, chunks=10, chunk_delay_ms=20, match="solo")
    with pytest.raises(openai.APIError) as info:
        _text(_stream(client, model="solo").parse())
    assert "not valid JSON" in info.value.message


def test_stream_with_every_deployment_down_is_503(client, sims):
    sims["azure"].fault(status=503)
    sims["openai"].fault(status=503)
    with pytest.raises(openai.InternalServerError) as info:
        _stream(client)
    assert info.value.status_code == 503


def test_client_disconnect_cancels_the_upstream_call(gateway, sims):
    sims["openai"].fault(chunks=200, chunk_delay_ms=50, match="solo")
    body = {"model": "solo", "messages": USER, "stream": True}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=10) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    # Closing the response dropped the connection mid-stream; the simulator must see it too.
    deadline = time.monotonic() + 60
    while sims["openai"].stats()["cancelled"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = sims["openai"].stats()
    assert stats["cancelled"] == 1 and stats["open_streams"] == 0
    (logged,) = [r for r in sims["openai"].requests() if r["model"] == "solo"]
    assert logged["outcome"] == "cancelled"
