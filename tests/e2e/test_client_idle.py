"""A connection that stops sending in the middle of a request is answered 408 and closed after
`server.client_idle_timeout_s` (checked as often: within twice that), in the door's envelope; one that
sends nothing at all is closed too. Was: held for ever (uvicorn times out only idle keep-alive
connections), so anyone could hold the gateway's sockets without a key. A client that keeps sending,
however slowly, and a client waiting for a slow or long answer are never cut."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from builders import api_keys, config, deployment, group, simulated

from .processes import Gateway, Simulator

KEY = "mh-idle-client-key"
IDLE_S = 1.0
DEADLINE_S = 30.0  # a generous bound for "answered": the machine may be busy


@pytest.fixture(scope="module")
def sim():
    s = Simulator("openai", "idle-openai")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gateway(sim, tmp_path_factory):
    cfg = config(
        server=api_keys("MH_IDLE_KEY", client_idle_timeout_s=IDLE_S),
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-idle")},
        model_groups={"g": group("oa", retries=0)},
    )
    gw = Gateway(cfg, tmp_path_factory.mktemp("idle"), {"MH_IDLE_KEY": KEY})
    yield gw
    log = gw.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(autouse=True)
def _no_faults(sim):
    yield
    sim.clear_faults()


def _answer(sock: socket.socket) -> bytes:
    """What the gateway sends before it closes the connection (a failure if it keeps it open)."""
    sock.settimeout(DEADLINE_S)
    answer = b""
    try:
        while piece := sock.recv(65536):
            answer += piece
    except TimeoutError:
        pytest.fail(f"the connection was still open after {DEADLINE_S} s: {answer[:200]!r}")
    return answer


def _connect(gateway: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=DEADLINE_S)


HEAD = f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n".encode()
BODY = json.dumps({"model": "g", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize(
    "sent",
    [
        HEAD[:30],  # a head stopped in its request line's headers
        HEAD + b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n" + BODY[:10],  # a body stopped
    ],
    ids=["head", "body"],
)
def test_a_request_that_stops_arriving_is_answered_408_in_openais_envelope(gateway, sent):
    with _connect(gateway) as sock:
        sock.sendall(sent)
        head, _, body = _answer(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "server.client_idle_timeout_s" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_a_stopped_request_to_the_anthropic_door_is_answered_in_its_envelope(gateway):
    with _connect(gateway) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nx-api-key: " + KEY.encode() + b"\r\n")
        head, _, body = _answer(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    answer = json.loads(body)
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error", answer


def test_a_connection_that_sends_nothing_is_closed(gateway):
    with _connect(gateway) as sock:
        assert _answer(sock).startswith(b"HTTP/1.1 408 ")


def test_a_client_that_keeps_sending_slowly_is_served(gateway):
    """Each byte resets the clock: the body takes several times the idle timeout in all."""
    with _connect(gateway) as sock:
        sock.sendall(HEAD + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY))
        step = max(1, len(BODY) // 8)
        for i in range(0, len(BODY), step):
            sock.sendall(BODY[i : i + step])
            time.sleep(IDLE_S / 3)
        sock.settimeout(DEADLINE_S)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_waiting_for_a_slow_or_long_answer_is_not_cut(gateway, sim, stream):
    """The request is all read: the client owes nothing while the upstream thinks (3 idle periods) or
    streams for longer than the idle timeout."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=DEADLINE_S)
    if stream:
        sim.fault(chunks=12, chunk_delay_ms=int(IDLE_S * 300))
        chunks = list(
            client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}], stream=True)
        )
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 12
    else:
        sim.fault(latency_ms=int(IDLE_S * 3000))
        done = client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}])
        assert done.choices[0].message.content
