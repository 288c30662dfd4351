"""docs/api.md "Response headers" and "Errors", against the running gateway: `x-request-id` (`req_` + 32 hex,
the time in milliseconds first, so ids sort by time; the same id sent upstream) is on every answer of the
API, streams and errors included; served answers and errors after routing began say what was attempted
(`x-multihome-attempts`, each `deployment;outcome=...;ms=...`); and each error a request can provoke comes
with the status and `code` the Errors table gives it (the table is read, so a code renamed in one place
fails here)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY
from .helpers import until

API_DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")
ATTEMPT = re.compile(r'[\w@.-]+;outcome=[\w]+(;reason="[^"]*")?(;ms=\d+(\.\d+)?)?')
AUTH = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
USER = [{"role": "user", "content": "hi"}]
GOOD = {"model": "gpt-4o", "messages": USER}


def documented_errors() -> set[tuple[int, str]]:
    """(status, code) pairs of docs/api.md's Errors table."""
    table = API_DOC.split("| Status | `code` | When |", 1)[1].split("\n\n", 1)[0]
    pairs = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0][:1].isdigit():
            continue
        statuses = [int(s) for s in re.findall(r"\d{3}", cells[0])]
        for code in re.findall(r"`([a-z_]+)`", cells[1]):
            pairs.update((status, code) for status in statuses)
    return pairs


def _request_id(resp: httpx.Response) -> str:
    rid = resp.headers.get("x-request-id", "")
    assert REQUEST_ID.fullmatch(rid), (resp.status_code, dict(resp.headers))
    made_ms = int(rid[4:16], 16)  # the time in milliseconds, then 80 random bits
    assert abs(made_ms - time.time() * 1000) < 600_000, rid
    return rid


def _raw(gateway, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written as bytes (what httpx refuses to send), the answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(data: bytes) -> int:
    found = re.search(rb"(?i)content-length:\s*(\d+)", data.split(b"\r\n\r\n", 1)[0])
    return int(found.group(1)) if found else 0


REQUESTS: dict[str, tuple[Callable[[str], httpx.Response], int, str]] = {
    "not JSON": (lambda u: httpx.post(u + "/v1/chat/completions", headers=AUTH, content=b"{x"), 400, "invalid_json"),
    "no key": (lambda u: httpx.post(u + "/v1/chat/completions", json=GOOD), 401, "invalid_api_key"),
    "unknown model": (
        lambda u: httpx.post(u + "/v1/chat/completions", headers=AUTH, json={**GOOD, "model": "nope"}),
        404,
        "model_not_found",
    ),
    "unknown path": (lambda u: httpx.get(u + "/v1/nothing-here", headers=AUTH), 404, "unknown_url"),
    "wrong method": (lambda u: httpx.get(u + "/v1/chat/completions", headers=AUTH), 405, "method_not_allowed"),
    "form body": (
        lambda u: httpx.post(
            u + "/v1/chat/completions", headers={**AUTH, "content-type": "text/plain"}, content=b"model=gpt-4o"
        ),
        415,
        "unsupported_media_type",
    ),
    "over max_body_bytes": (
        lambda u: httpx.post(u + "/v1/chat/completions", headers=AUTH, content=b" " * 70_000),
        413,
        "request_too_large",
    ),
    "narrowing outside the group": (
        lambda u: httpx.post(
            u + "/v1/chat/completions", headers={**AUTH, "x-multihome-deployments": "oa-solo"}, json=GOOD
        ),
        400,
        "invalid_route_narrowing",
    ),
    "admin without a key": (lambda u: httpx.get(u + "/admin/v1/whoami"), 401, "invalid_api_key"),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_each_error_has_its_documented_code_and_a_request_id(gateway, case):
    send, status, code = REQUESTS[case]
    resp = send(gateway.url)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}, error
    assert (status, code) in documented_errors(), f"docs/api.md's Errors table lacks {status} {code}"
    _request_id(resp)


def test_a_content_length_that_is_not_a_number_is_400_invalid_http_request(gateway):
    status, headers, body = _raw(
        gateway,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + CLIENT_KEY.encode()
        + b"\r\ncontent-type: application/json\r\ncontent-length: twelve\r\nconnection: close\r\n\r\n{}",
    )
    assert status == 400, body
    assert httpx.Response(400, content=body).json()["error"]["code"] == "invalid_http_request"
    assert (400, "invalid_http_request") in documented_errors()
    assert REQUEST_ID.fullmatch(headers.get("x-request-id", "")), headers
    _logged(gateway, headers["x-request-id"], "400 invalid_http_request")


def test_served_streamed_and_failed_answers_say_what_was_attempted(gateway, sims, client: openai.OpenAI):
    unary = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    streamed = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, stream=True)
    assert list(streamed.parse())  # the stream itself arrives
    for raw in (unary, streamed):
        rid = _request_id(raw.http_response)
        assert raw.headers["x-multihome-deployment"] in ("az-main", "oa-main")
        attempts = raw.headers["x-multihome-attempts"].split(", ")
        assert all(ATTEMPT.fullmatch(a) for a in attempts) and attempts[-1].split(";")[1] == "outcome=ok", attempts
        # The same id went upstream with the call (the simulators record what they were sent).
        seen = {r.get("request_id") for sim in sims.values() for r in sim.requests()}
        assert rid in seen
    assert _request_id(unary.http_response) < _request_id(streamed.http_response)  # ids sort by time

    sims["openai"].fault(status=503, match="solo")
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="solo", messages=USER)
    resp = failed.value.response
    assert resp.status_code == 503 and failed.value.code == "all_deployments_failed"
    assert (503, "all_deployments_failed") in documented_errors()
    _request_id(resp)
    assert "x-multihome-deployment" not in resp.headers
    assert [a.split(";")[:2] for a in resp.headers["x-multihome-attempts"].split(", ")] == [
        ["oa-solo", "outcome=http_503"]
    ]


def test_headers_past_the_default_64_kib_are_431_with_a_request_id(gateway):
    """README: `server.max_header_bytes` (request line plus headers, default 64 KiB; 431). The shared
    gateway leaves it at its default: a head just under it is served, one past it refused."""

    def head(size: int) -> bytes:
        start = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
        end = b"connection: close\r\n\r\n"
        return start + b"x-pad: " + b"a" * (size - len(start) - len(end) - 9) + b"\r\n" + end

    status, _, body = _raw(gateway, head(64 * 1024 - 16))
    assert status == 200, body[:300]
    status, headers, body = _raw(gateway, head(64 * 1024 + 16))
    assert status == 431, body[:300]
    assert httpx.Response(431, content=body).json()["error"]["code"] == "request_header_fields_too_large"
    assert (431, "request_header_fields_too_large") in documented_errors()
    assert REQUEST_ID.fullmatch(headers.get("x-request-id", "")), headers
    _logged(gateway, headers["x-request-id"], "431 request_header_fields_too_large")


def _logged(gateway, request_id: str, what: str) -> None:
    """docs/api.md: the x-request-id keys the call in the logs, also of an answer the HTTP layer gave before
    any route (docs/serving.md): the line names the status, the code and the path, no header value."""
    line = until(
        lambda: next((ln for ln in gateway.output().splitlines() if f"request_id={request_id}" in ln), None),
        30,
        f"the log line of {request_id}",
    )
    assert what in line and "path=/v1/" in line and "a" * 100 not in line, line


def test_the_routes_without_v1_serve_sdks_whose_base_url_lacks_it(gateway):
    """docs/api.md: `POST /chat/completions`, `POST /embeddings` and `GET /models` are the same endpoints
    for an SDK whose base URL has no `/v1`."""
    bare = openai.OpenAI(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0, timeout=10)
    chat = bare.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert chat.parse().choices[0].message.content and REQUEST_ID.fullmatch(chat.headers["x-request-id"])
    assert len(bare.embeddings.create(model="text-embedding-3-small", input="hi").data[0].embedding) > 0
    listed = bare.models.list()
    assert "gpt-4o" in {m.id for m in listed} and all(m.owned_by == "multihome" for m in listed)
