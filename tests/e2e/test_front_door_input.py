"""Hostile request heads and bodies at both front doors get a 4xx that says what to fix, in the
door's own envelope; never a 500, a hang or a call in someone else's name (issue 11)."""

from __future__ import annotations

import json
import re
import select
import socket

import anthropic
import httpx
import pytest

from .conftest import CLIENT_KEY

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
JSON = ("content-type", "application/json")


def openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def anthropic_error(resp: httpx.Response, status: int, kind: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"], body
    assert body["request_id"] == resp.headers["x-request-id"]
    return body["error"]


# --- finding 7: a credential header sent twice -------------------------------------------------


@pytest.mark.parametrize("first", ["Bearer forged-key", f"Bearer {CLIENT_KEY}"])
def test_two_authorization_headers_are_refused_on_the_openai_door(gateway, sims, first):
    headers = [("authorization", first), ("authorization", f"Bearer {CLIENT_KEY}"), JSON]
    for method, path, body in [("POST", "/v1/chat/completions", CHAT), ("GET", "/v1/models", None)]:
        resp = httpx.request(method, gateway.url + path, headers=headers, json=body, timeout=10)
        error = openai_error(resp, 400)
        assert error["code"] == "duplicate_credentials" and "more than one 'Authorization'" in error["message"]
        assert CLIENT_KEY not in resp.text
    assert sims["azure"].stats()["requests"] == 0


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_two_credential_headers_are_refused_on_the_anthropic_door(gateway, sims, header):
    value = f"Bearer {CLIENT_KEY}" if header == "authorization" else CLIENT_KEY
    forged = "Bearer forged-key" if header == "authorization" else "forged-key"
    resp = httpx.post(
        gateway.url + "/v1/messages",
        json=MESSAGES,
        timeout=10,
        headers=[(header, forged), (header, value), ("anthropic-version", "2023-06-01")],
    )
    error = anthropic_error(resp, 400, "invalid_request_error")
    assert "more than one" in error["message"]
    assert sims["azure"].stats()["requests"] == 0


def test_one_authorization_and_one_x_api_key_still_work(gateway):
    headers = [("authorization", f"Bearer {CLIENT_KEY}"), ("x-api-key", CLIENT_KEY)]
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=10).status_code == 200


# --- a narrowing header sent twice (a client's or a proxy's duplicate): its first copy was read, the other dropped


@pytest.mark.parametrize("second", ["oa-main", "az-main"])
def test_two_narrowing_headers_are_refused_naming_the_header(gateway, sims, second):
    narrow = [("x-multihome-deployments", "az-main"), ("x-multihome-deployments", second)]
    auth = ("authorization", f"Bearer {CLIENT_KEY}")
    resp = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=[auth, JSON, *narrow], timeout=10)
    error = openai_error(resp, 400)
    assert (error["code"], error["param"]) == ("duplicate_header", "x-multihome-deployments"), error
    assert "more than one 'x-multihome-deployments' header" in error["message"]
    for path in ("/v1/messages", "/v1/messages/count_tokens"):  # count_tokens reads the header as messages does
        resp = httpx.post(gateway.url + path, json=MESSAGES, headers=[auth, *narrow], timeout=10)
        words = "more than one 'x-multihome-deployments'"
        assert words in anthropic_error(resp, 400, "invalid_request_error")["message"], path
    assert sims["azure"].stats()["requests"] == sims["openai"].stats()["requests"] == 0
    one = [auth, JSON, ("x-multihome-deployments", f"az-main,{second}")]  # both names in one header: served
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=one, timeout=10).status_code == 200
    assert httpx.post(gateway.url + "/v1/messages/count_tokens", json=MESSAGES, headers=one, timeout=10).json()[
        "input_tokens"
    ]
    foreign = [auth, ("x-multihome-deployments", "elsewhere")]  # a name not of the group: refused as messages does
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        resp = httpx.post(gateway.url + path, json=MESSAGES, headers=foreign, timeout=10)
        assert "Cannot narrow model" in anthropic_error(resp, 400, "invalid_request_error")["message"], path
    # A Responses count reads them as a create does.
    turn = {"model": "gpt-4o", "input": "hi"}
    for path in ("/v1/responses", "/v1/responses/input_tokens"):
        resp = httpx.post(gateway.url + path, json=turn, headers=[auth, *narrow], timeout=10)
        assert openai_error(resp, 400)["code"] == "duplicate_header", path
        resp = httpx.post(gateway.url + path, json=turn, headers=foreign, timeout=10)
        assert openai_error(resp, 400)["code"] == "invalid_route_narrowing", path
    assert httpx.post(gateway.url + "/v1/responses/input_tokens", json=turn, headers=one, timeout=10).json()[
        "input_tokens"
    ]


# --- finding 10: JSON nested far deeper than anything real (the admin API: tests/api/test_admin_bad_bodies.py)

DEPTH = 10_000  # ten times the interpreter's recursion limit; at most 50 KB, under the body limit


def _deep(prefix: str, shape: str) -> bytes:
    opened, closed = ("[" * DEPTH, "]" * DEPTH) if shape == "[" else ('{"":' * DEPTH, "1" + "}" * DEPTH)
    return (prefix + opened + closed + "}").encode()


@pytest.mark.parametrize("shape", ["[", "{"])
@pytest.mark.parametrize(
    "path, prefix",
    [
        ("/v1/chat/completions", '{"model": "gpt-4o", "messages": '),
        ("/v1/embeddings", '{"model": "text-embedding-3-small", "input": '),
        ("/v1/route/explain", '{"model": "gpt-4o", "messages": '),
    ],
)
def test_deep_nesting_is_a_400_that_says_so_on_the_openai_door(gateway, path, prefix, shape):
    resp = httpx.post(
        gateway.url + path,
        content=_deep(prefix, shape),
        timeout=10,
        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
    )
    error = openai_error(resp, 400)
    assert error["code"] == "nested_too_deeply" and "nested too deeply" in error["message"], error


@pytest.mark.parametrize("shape", ["[", "{"])
def test_deep_nesting_is_a_400_on_the_anthropic_door(gateway, shape):
    body = _deep('{"model": "gpt-4o", "max_tokens": 10, "messages": ', shape)
    resp = httpx.post(
        gateway.url + "/v1/messages",
        content=body,
        timeout=10,
        headers={"x-api-key": CLIENT_KEY, "content-type": "application/json"},
    )
    assert "nested too deeply" in anthropic_error(resp, 400, "invalid_request_error")["message"]


# --- finding 8: a request head far over any real one ----------------------------------------------

MiB = 1 << 20


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _send_huge_head(port: int, path: bytes, size: int) -> bytes:
    """Send a head with one `size`-byte header, as a client would: stop sending once an answer comes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nX-Big: ")
        chunk, sent = b"a" * (256 * 1024), 0
        try:
            while sent < size and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                return answer
            answer += piece


@pytest.mark.parametrize("path, envelope", [(b"/v1/chat/completions", "openai"), (b"/v1/messages", "anthropic")])
def test_a_32_mib_header_is_refused_early_with_431_and_bounded_memory(gateway, path, envelope):
    before = _peak_rss(gateway.popen.pid)
    answer = _send_huge_head(gateway.port, path, 32 * MiB)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b"connection: close" in head.lower()
    error = json.loads(body)
    message = error["error"]["message"]
    assert "65536 bytes (server.max_header_bytes)" in message
    if envelope == "anthropic":
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    else:
        assert error["error"]["code"] == "request_header_fields_too_large"
    grown = _peak_rss(gateway.popen.pid) - before
    assert grown < 8 * MiB, f"the gateway's peak memory grew by {grown / MiB:.1f} MiB for one refused head"
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_large_heads_under_the_limit_are_served_one_after_another_on_one_connection(client):
    for _ in range(3):  # each request's head is counted on its own
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-pad": "p" * 48_000}
        )
        assert raw.parse().choices[0].message.content


@pytest.mark.parametrize("pad", [70_000, 200_000])
def test_a_pipelined_request_whose_head_is_over_the_limit_is_not_served(gateway, pad):
    """The third of three requests sent at once, its head over the limit, is refused like any other, after
    the first two are answered (they were accepted): their 200s in order, then the 431, then the
    connection closes, and the third is never served. Before, a head that began in the read that ended
    the request before it was counted from the next read on, and it was answered; later, the refusal
    closed the connection while an earlier answer was being written, and that answer was lost."""
    first = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n" * 2  # one answered while the other waits its turn
    second = (
        b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
        + CLIENT_KEY.encode()
        + b"\r\nX-Pad: "
        + b"p" * pad
        + b"\r\n\r\n"
    )
    answer = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        try:
            sock.sendall(first + second)
            while piece := sock.recv(65536):
                answer += piece
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass  # a connection still open after 10 s (the third was served) fails below
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)  # a status line follows the body before it
    assert statuses == [b"200", b"200", b"431"], answer[:600]
    assert b"gpt-4o" not in answer  # the model list was never sent
    assert httpx.get(gateway.url + "/healthz").status_code == 200


# --- a request the HTTP parser refuses ---------------------------------------------------------------


def _exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """(head, body) of the answer to raw `request` bytes (the gateway closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


MALFORMED = {
    "a raw space in the target": b"GET /v1/responses/a b HTTP/1.1\r\nHost: gw\r\n\r\n",
    "raw UTF-8 in the target": b"GET /v1/responses/r\xc3\xa9sum\xc3\xa9 HTTP/1.1\r\nHost: gw\r\n\r\n",
    "an unknown method": b"BREW /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n",
    "a NUL in a header": b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer k\x00\r\n\r\n",
    "a bad chunk": b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n",
    "Content-Length with chunked": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "a Content-Length past 64 bits": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 99999999999999999999\r\n\r\n{}"
    ),
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_the_http_parser_refuses_is_a_400_in_openais_envelope(gateway, request_bytes):
    """Was uvicorn's `text/plain` "Invalid HTTP request received.": a client reading OpenAI's error shape
    (every SDK) had nothing to read."""
    head, body = _exchange(gateway.port, request_bytes)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http_request"
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_a_request_the_http_parser_refuses_on_the_anthropic_door_is_in_anthropics_envelope(gateway):
    request = b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"
    head, body = _exchange(gateway.port, request)
    assert head.startswith(b"HTTP/1.1 400 "), head
    answer = json.loads(body)
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error", answer
    assert answer["request_id"].encode() in head  # the x-request-id header


# --- finding 11: methods, unknown paths and the Anthropic door's token count --------------------


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/embeddings", "POST"),
        ("GET", "/v1/route/explain", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/v1/models", "GET"),
        ("POST", "/v1/models/gpt-4o", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_wrong_method_is_405_with_allow_on_the_openai_door(gateway, method, path, allow):
    resp = httpx.request(method, gateway.url + path, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    error = openai_error(resp, 405)
    assert resp.headers["allow"] == allow and error["code"] == "method_not_allowed"
    assert f"use {allow}" in error["message"]


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_wrong_method_is_405_with_allow_in_anthropics_envelope(gateway, path):
    resp = httpx.get(gateway.url + path, headers={"x-api-key": CLIENT_KEY}, timeout=10)
    assert resp.headers["allow"] == "POST"
    assert "use POST" in anthropic_error(resp, 405, "invalid_request_error")["message"]


def test_an_unknown_path_is_404_listing_every_endpoint(gateway):
    message = openai_error(httpx.get(gateway.url + "/v1/nothing", timeout=10), 404)["message"]
    for endpoint in [
        "POST /v1/chat/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
        "GET /v1/models/{model}",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "POST /v1/route/explain",
        "/admin/v1/",
    ]:
        assert endpoint in message
    resp = httpx.post(gateway.url + "/v1/messages/batches", headers={"x-api-key": CLIENT_KEY}, json={}, timeout=10)
    assert "POST /v1/messages/count_tokens" in anthropic_error(resp, 404, "not_found_error")["message"]


def test_count_tokens_answers_the_anthropic_sdk_with_the_gateways_estimate(gateway, sims):
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    text = "Summarise the benefits of running one gateway in front of several clouds."
    plain = claude.messages.count_tokens(model="gpt-4o", messages=[{"role": "user", "content": text}])
    assert plain.input_tokens == 4 + len(text) // 4  # per message, then about four characters a token
    tool = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    more = claude.messages.count_tokens(
        model="gpt-4o", system="Be brief.", tools=[tool], messages=[{"role": "user", "content": text}]
    )
    assert more.input_tokens > plain.input_tokens
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "not_found_error" and "gpt-4o" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.count_tokens(model="gpt-4o", messages=[])
    assert "messages" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0).messages.count_tokens(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert all(sim.stats()["requests"] == 0 for sim in sims.values())  # an estimate: no upstream is asked


def test_answers_carry_a_date_but_do_not_name_the_server_software(gateway):
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    for resp in (
        httpx.get(gateway.url + "/healthz", timeout=10),
        httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=10),
    ):
        assert resp.status_code == 200, resp.text
        assert "server" not in resp.headers and "date" in resp.headers
