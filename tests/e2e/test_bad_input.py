"""Bad input gets a 4xx in OpenAI's error envelope that says what to fix; never a 500 or a hang."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY

AUTH = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
GOOD = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _post(gateway, body, headers=AUTH, path="/v1/chat/completions"):
    kwargs = {"json": body} if not isinstance(body, (bytes, str)) else {"content": body}
    return httpx.post(gateway.url + path, headers=headers, timeout=5, **kwargs)


def _error(resp, status):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert resp.headers["x-request-id"].startswith("req_")
    return error


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        ({"model": "gpt-4o"}, "messages", "Missing required parameter: 'messages'"),  # OpenAI's words
        ({"model": 42, "messages": []}, "model", "Expected `str`"),
        ({"model": "gpt-4o", "messages": []}, "messages", "at least one message"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "Expected"),
        ({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "not one of"),
        (
            {"model": "gpt-4o", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "tool_call_id",
        ),
        ({**GOOD, "temperature": 3}, "temperature", "between 0 and 2"),
        ({**GOOD, "stream": "yes"}, "stream", "Expected `bool"),
        ({**GOOD, "tool_choice": "sometimes", "tools": []}, "tool_choice", "tool_choice"),
        ({**GOOD, "response_format": {"type": "yaml"}}, "response_format.type", "json_schema"),
    ],
)
def test_malformed_bodies_are_400_with_the_field(gateway, body, param, fragment):
    error = _error(_post(gateway, body), 400)
    assert error["param"] == param
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_404_naming_the_available_ones(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-5-imaginary", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"
    assert "gpt-4o" in info.value.message


def test_empty_messages_via_sdk(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert info.value.param == "messages"


def test_oversized_body_is_413(gateway, sims):
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 70000}]}
    error = _error(_post(gateway, big), 413)
    assert "65536" in error["message"]
    assert sims["azure"].stats()["requests"] == 0


def test_oversized_chunked_body_is_413(gateway):
    def chunks():
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}'

    _error(httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, content=chunks(), timeout=5), 413)


def test_more_than_10000_messages_is_openais_400_and_no_upstream_call(gateway, sims):
    # The shortest items there are: a 20 KB body, within this gateway's 64 KiB limit.
    error = _error(_post(gateway, {"model": "gpt-4o", "messages": [0] * 10_001}), 400)
    assert (error["param"], error["code"], error["type"]) == (
        "messages",
        "array_above_max_length",
        "invalid_request_error",
    )
    assert "maximum length 10000, but got an array with length 10001" in error["message"]
    assert sims["azure"].stats()["requests"] == 0


def test_wrong_content_type_is_415(gateway):
    headers = {**AUTH, "content-type": "application/x-www-form-urlencoded"}
    error = _error(_post(gateway, b"model=gpt-4o", headers=headers), 415)
    assert "application/json" in error["message"]


def test_missing_and_invalid_keys_are_401(gateway):
    _error(_post(gateway, GOOD, headers={"content-type": "application/json"}), 401)
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(**GOOD)
    assert info.value.code == "invalid_api_key"
    assert "wrong" not in info.value.message


def test_unknown_path_and_wrong_method(gateway):
    _error(httpx.get(gateway.url + "/v1/nothing", headers=AUTH), 404)
    _error(httpx.get(gateway.url + "/v1/chat/completions", headers=AUTH), 405)


def test_wrong_embeddings_input_is_400(gateway):
    error = _error(_post(gateway, {"model": "text-embedding-3-small", "input": [1, "a"]}, path="/v1/embeddings"), 400)
    assert error["param"] == "input"


def test_truncated_body_does_not_hang(gateway):
    """A client that promises more body than it sends and then closes gets no hang on the server."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + CLIENT_KEY.encode()
            + b'\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"model"'
        )
    # The gateway is still healthy afterwards.
    assert httpx.get(gateway.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    "name, code", [("get weather", "invalid_value"), ("f" * 65, "string_above_max_length"), ("", "empty_string")]
)
def test_function_tool_names_outside_openais_rule_are_400_through_the_sdk(client, name, code):
    """OpenAI's rule (a-z A-Z 0-9 _ -, 1-64 on chat completions, 1-128 on Responses), its param and code."""
    params = {"type": "object", "properties": {}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": name, "parameters": params}}],
        )
    assert (info.value.param, info.value.code) == ("tools[0].function.name", code)
    name = "f" * 129 if len(name) == 65 else name  # the Responses API allows 128 (schema/tool_names.py)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model="gpt-4o", input="hi", store=False, tools=[{"type": "function", "name": name, "parameters": params}]
        )
    assert (info.value.param, info.value.code) == ("tools[0].name", code)
