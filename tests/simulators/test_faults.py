"""Fault knobs (per-request header and run-time table), request log and stats."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .sim_helpers import AZURE_KEY, OPENAI_KEY

USER = [{"role": "user", "content": "one two three four five six"}]
AUTH = {"Authorization": f"Bearer {OPENAI_KEY}"}


def fault(spec: str) -> dict:
    return {"extra_headers": {"x-sim-fault": spec}}


def raw_stream(sim, spec: str, **body) -> httpx.Response:
    """POST a streaming chat with httpx and return the response (body read up to any cut)."""
    payload = {"model": "m", "messages": USER, "stream": True, **body}
    return httpx.post(sim.url + "/v1/chat/completions", json=payload, headers={**AUTH, "x-sim-fault": spec})


def events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


# -- status / throttle ---------------------------------------------------------------------


def test_status_fault(oclient, osim):
    with pytest.raises(openai.InternalServerError) as e:
        oclient.chat.completions.create(model="m", messages=USER, **fault("status=503"))
    assert e.value.status_code == 503 and e.value.body["code"] == "server_error"
    with pytest.raises(openai.RateLimitError) as e:
        oclient.chat.completions.create(model="m", messages=USER, **fault("status=429"))
    assert e.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.BadRequestError):
        oclient.embeddings.create(model="e", input="x", **fault("status=400"))
    assert osim.stats()["errors"] == 3
    log = osim.requests()
    assert log[0]["outcome"] == "error:503" and log[0]["fault"] == "status=503"


def test_throttle_sets_retry_after(oclient):
    with pytest.raises(openai.RateLimitError) as e:
        oclient.chat.completions.create(model="m", messages=USER, **fault("throttle=2;"))
    h = e.value.response.headers
    assert h["retry-after"] == "2" and h["retry-after-ms"] == "2000"
    assert e.value.body["code"] == "rate_limit_exceeded"


def test_sdk_honours_retry_after_ms(osim):
    osim.set_fault({"throttle": 0.3, "times": 1})
    client = openai.OpenAI(base_url=osim.url + "/v1", api_key=OPENAI_KEY, max_retries=1)
    t0 = time.monotonic()
    r = client.chat.completions.create(model="m", messages=USER)
    assert r.choices[0].finish_reason == "stop"
    assert time.monotonic() - t0 >= 0.3
    assert [e["outcome"] for e in osim.requests()] == ["error:429", "ok"]


def test_azure_throttle_headers(aclient):
    with pytest.raises(openai.RateLimitError) as e:
        aclient.chat.completions.create(model="gpt-4o", messages=USER, **fault("throttle=1.5"))
    h = e.value.response.headers
    assert h["retry-after"] == "2" and h["retry-after-ms"] == "1500" and h["x-ms-retry-after-ms"] == "1500"
    assert e.value.body["code"] == "rate_limit_exceeded"


# -- content filter ------------------------------------------------------------------------


def test_content_filter_prompt(oclient, aclient):
    with pytest.raises(openai.BadRequestError) as e:
        oclient.chat.completions.create(model="m", messages=USER, **fault("content_filter=prompt"))
    assert e.value.body["code"] == "content_filter"
    with pytest.raises(openai.BadRequestError) as e:
        aclient.chat.completions.create(model="gpt-4o", messages=USER, **fault("content_filter=prompt"))
    body = e.value.body
    assert body["code"] == "content_filter" and body["param"] == "prompt"
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body["innererror"]["content_filter_result"]["violence"] == {"filtered": True, "severity": "high"}


def test_content_filter_output(oclient, aclient):
    full = oclient.chat.completions.create(model="m", messages=USER).choices[0].message.content
    r = oclient.chat.completions.create(model="m", messages=USER, **fault("content_filter=output"))
    assert r.choices[0].finish_reason == "content_filter"
    assert full.startswith(r.choices[0].message.content) and len(r.choices[0].message.content) < len(full)
    raw = aclient.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=USER, **fault("content_filter=output")
    )
    assert raw.http_response.status_code == 200
    choice = raw.http_response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["content_filter_results"]["violence"]["filtered"] is True
    chunks = list(
        aclient.chat.completions.create(model="gpt-4o", messages=USER, stream=True, **fault("content_filter=output"))
    )
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert chunks[-1].choices[0].content_filter_results["violence"]["filtered"] is True  # type: ignore[attr-defined]


# -- cuts and malformed frames -------------------------------------------------------------


def test_cut_after_stream(osim, oclient, wait):
    with httpx.stream(
        "POST",
        osim.url + "/v1/chat/completions",
        json={"model": "m", "messages": USER, "stream": True},
        headers={**AUTH, "x-sim-fault": "cut_after=2"},
    ) as r:
        assert r.status_code == 200
        got = b""
        with pytest.raises(httpx.RemoteProtocolError):  # no terminating zero-length chunk
            for part in r.iter_raw():
                got += part
    evs = events(got.decode())
    assert b"[DONE]" not in got
    deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in evs]
    assert deltas[0]["role"] == "assistant" and [d["content"] for d in deltas[1:]] == ["Hello", " from"]
    assert wait(lambda: osim.stats()["cut"] == 1)
    assert osim.requests()[-1]["outcome"] == "cut"
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for _ in oclient.chat.completions.create(model="m", messages=USER, stream=True, **fault("cut_after=1")):
            pass


def test_cut_non_stream(oclient, osim):
    with pytest.raises(openai.APIConnectionError):
        oclient.chat.completions.create(model="m", messages=USER, **fault("cut_after=0"))
    assert osim.stats()["cut"] == 1 and osim.stats()["completed"] == 0


def test_malformed_chunk(osim, oclient):
    r = raw_stream(osim, "malformed_at=3")
    evs = events(r.text)
    assert evs[2] == "data: {not json"
    assert evs[-1] == "data: [DONE]"  # the stream carries on after the bad line
    normal = events(raw_stream(osim, "").text)
    assert len(evs) == len(normal) + 1
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's SSE decoder
        list(oclient.chat.completions.create(model="m", messages=USER, stream=True, **fault("malformed_at=2")))


# -- timing --------------------------------------------------------------------------------


def test_latency_and_first_byte(oclient, osim):
    t0 = time.monotonic()
    oclient.chat.completions.create(model="m", messages=USER, **fault("latency_ms=250"))
    assert time.monotonic() - t0 >= 0.25
    t0 = time.monotonic()
    stream = oclient.chat.completions.create(model="m", messages=USER, stream=True, **fault("first_byte_ms=250"))
    next(iter(stream))
    assert time.monotonic() - t0 >= 0.25
    stream.close()
    oclient.chat.completions.create(model="m", messages=USER)
    # No fault asked for, none applied: the simulator's own record (a bound on the call's time would
    # be a bound on the machine's load).
    assert [r["fault"] for r in osim.requests()] == ["latency_ms=250", "first_byte_ms=250", None]


def test_hang_then_client_timeout_counts_cancelled(osim, wait):
    client = openai.OpenAI(base_url=osim.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=0.4)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=USER, **fault("hang=1"))
    assert wait(lambda: osim.stats()["cancelled"] == 1)
    assert osim.requests()[-1]["outcome"] == "cancelled"
    client.close()


def test_slow_long_stream_disconnect_cancels(osim, wait):
    with httpx.stream(
        "POST",
        osim.url + "/v1/chat/completions",
        json={"model": "m", "messages": USER, "stream": True},
        headers={**AUTH, "x-sim-fault": "chunks=1000;chunk_delay_ms=20"},
    ) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert got[0].startswith("data: ")
        assert osim.stats()["open_streams"] == 1
    assert wait(lambda: osim.stats()["cancelled"] == 1)
    s = osim.stats()
    assert s["open_streams"] == 0 and s["completed"] == 0
    assert osim.requests()[-1]["outcome"] == "cancelled"


def test_chunks_forces_stream_length(osim, oclient):
    evs = events(raw_stream(osim, "chunks=50").text)
    content = [e for e in evs if '"content":"' in e and '"role"' not in e]
    assert len(content) == 50
    # Non-streaming replies with the same knob carry the same text.
    full = oclient.chat.completions.create(model="m", messages=USER, **fault("chunks=50")).choices[0].message.content
    assert "".join(json.loads(e[6:])["choices"][0]["delta"]["content"] for e in content) == full
    few = events(raw_stream(osim, "chunks=2").text)
    assert len([e for e in few if '"content":"' in e and '"role"' not in e]) == 2


# -- run-time table ------------------------------------------------------------------------


def test_times_auto_clears(osim, oclient):
    r = httpx.post(osim.url + "/_sim/faults", json={"status": 500, "times": 2})
    assert r.status_code == 200 and r.json()["faults"] == [{"status": 500, "times": 2}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oclient.chat.completions.create(model="m", messages=USER)
    assert oclient.chat.completions.create(model="m", messages=USER).choices
    assert httpx.get(osim.url + "/_sim/faults").json() == {"faults": []}


def test_fault_until_cleared_and_delete(osim, oclient):
    httpx.post(osim.url + "/_sim/faults", json={"status": 502})
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            oclient.chat.completions.create(model="m", messages=USER)
    assert httpx.delete(osim.url + "/_sim/faults").json() == {"faults": []}
    assert oclient.chat.completions.create(model="m", messages=USER).choices


def test_cached_reply_still_sees_runtime_faults(osim, oclient):
    oclient.chat.completions.create(model="m", messages=USER)  # now cached
    osim.set_fault({"status": 503, "times": 1})
    with pytest.raises(openai.InternalServerError):
        oclient.chat.completions.create(model="m", messages=USER)
    assert oclient.chat.completions.create(model="m", messages=USER).choices


def test_match_only_hits_that_deployment(asim, aclient):
    httpx.post(asim.url + "/_sim/faults", json={"status": 503, "match": "gpt-4o"})
    with pytest.raises(openai.InternalServerError):
        aclient.chat.completions.create(model="gpt-4o", messages=USER)
    assert aclient.chat.completions.create(model="gpt-4o-mini", messages=USER).choices
    v1 = openai.OpenAI(base_url=asim.url + "/openai/v1/", api_key=AZURE_KEY, max_retries=0)
    with pytest.raises(openai.InternalServerError):  # the v1 form matches on the body's model
        v1.chat.completions.create(model="gpt-4o", messages=USER)
    assert [e["outcome"] for e in asim.requests()] == ["error:503", "ok", "error:503"]


def test_bad_fault_specs(osim):
    r = httpx.post(
        osim.url + "/v1/chat/completions",
        json={"model": "m", "messages": USER},
        headers={**AUTH, "x-sim-fault": "explode=1"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_sim_fault"
    assert httpx.post(osim.url + "/_sim/faults", json={"status": "abc"}).status_code == 400
    assert httpx.post(osim.url + "/_sim/faults", json={"content_filter": "both"}).status_code == 400
    assert httpx.get(osim.url + "/_sim/faults").json() == {"faults": []}


# -- introspection -------------------------------------------------------------------------


def test_request_log_and_stats(osim, oclient):
    for i in range(3):
        oclient.chat.completions.create(model=f"m{i}", messages=USER, extra_headers={"x-request-id": f"rid-{i}"})
    oclient.chat.completions.create(model="s", messages=USER, stream=True).close()
    log = httpx.get(osim.url + "/_sim/requests?limit=2").json()
    assert [e["model"] for e in log] == ["m2", "s"]
    assert log[0]["request_id"] == "rid-2" and log[0]["stream"] is False and log[1]["stream"] is True
    assert log[0]["auth"] is True and log[0]["method"] == "POST" and log[0]["path"] == "/v1/chat/completions"
    assert OPENAI_KEY not in json.dumps(httpx.get(osim.url + "/_sim/requests").json())
    stats = httpx.get(osim.url + "/_sim/stats").json()
    assert stats == {"requests": 4, "completed": 4, "errors": 0, "cancelled": 0, "cut": 0, "open_streams": 0}
    assert httpx.get(osim.url + "/_sim/health").status_code == 200
    assert httpx.post(osim.url + "/_sim/reset").status_code == 200
    assert httpx.get(osim.url + "/_sim/requests").json() == []
    assert httpx.get(osim.url + "/_sim/stats").json()["requests"] == 0


def test_log_is_bounded():
    from multihome.simulators import SimulatorConfig, start_simulator_in_thread

    with start_simulator_in_thread(SimulatorConfig(log_size=5)) as sim:
        with httpx.Client() as c:
            for i in range(8):
                c.post(sim.url + "/v1/chat/completions", json={"model": f"m{i}", "messages": USER})
        assert [e["model"] for e in sim.requests()] == ["m3", "m4", "m5", "m6", "m7"]
        assert sim.stats()["requests"] == 8
