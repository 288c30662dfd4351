"""Hostile request heads and bodies at both front doors get a 4xx that says what to fix, in the
door's own envelope; never a 500, a hang or a call in someone else's name (issue 11)."""

from __future__ import annotations

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
    resp = httpx.post(gateway.url + "/v1/messages", json=MESSAGES, timeout=10,
                      headers=[(header, forged), (header, value), ("anthropic-version", "2023-06-01")])
    error = anthropic_error(resp, 400, "invalid_request_error")
    assert "more than one" in error["message"]
    assert sims["azure"].stats()["requests"] == 0


def test_one_authorization_and_one_x_api_key_still_work(gateway):
    headers = [("authorization", f"Bearer {CLIENT_KEY}"), ("x-api-key", CLIENT_KEY)]
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=10).status_code == 200


# --- finding 10: JSON nested far deeper than anything real (the admin API: tests/api/test_admin_bad_bodies.py)

DEPTH = 10_000  # ten times the interpreter's recursion limit; at most 50 KB, under the body limit


def _deep(prefix: str, shape: str) -> bytes:
    opened, closed = ("[" * DEPTH, "]" * DEPTH) if shape == "[" else ('{"":' * DEPTH, "1" + "}" * DEPTH)
    return (prefix + opened + closed + "}").encode()


@pytest.mark.parametrize("shape", ["[", "{"])
@pytest.mark.parametrize("path, prefix", [
    ("/v1/chat/completions", '{"model": "gpt-4o", "messages": '),
    ("/v1/embeddings", '{"model": "text-embedding-3-small", "input": '),
    ("/v1/route/explain", '{"model": "gpt-4o", "messages": '),
])
def test_deep_nesting_is_a_400_that_says_so_on_the_openai_door(gateway, path, prefix, shape):
    resp = httpx.post(gateway.url + path, content=_deep(prefix, shape), timeout=10,
                      headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})
    error = openai_error(resp, 400)
    assert error["code"] == "nested_too_deeply" and "nested too deeply" in error["message"], error


@pytest.mark.parametrize("shape", ["[", "{"])
def test_deep_nesting_is_a_400_on_the_anthropic_door(gateway, shape):
    body = _deep('{"model": "gpt-4o", "max_tokens": 10, "messages": ', shape)
    resp = httpx.post(gateway.url + "/v1/messages", content=body, timeout=10,
                      headers={"x-api-key": CLIENT_KEY, "content-type": "application/json"})
    assert "nested too deeply" in anthropic_error(resp, 400, "invalid_request_error")["message"]
