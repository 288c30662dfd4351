"""docs/anthropic-front-door.md "Authentication and headers": a key may come as `x-api-key` or as
`Authorization: Bearer`, and when both are present the Bearer one is the credential checked, as the
anthropic SDK sends them (`api_key=` as x-api-key, `auth_token=` as Bearer; this SDK takes only one of
the two, so the other goes as a default header, as a tool in front of it would add it)."""

from __future__ import annotations

import anthropic
import pytest

from .conftest import CLIENT_KEY

HI = [{"role": "user", "content": "hi"}]


def _both_sent(request) -> None:
    if "x-api-key" in request.headers:
        assert request.headers["authorization"].startswith("Bearer ")


def _claude(gateway, **auth) -> anthropic.Anthropic:
    http = anthropic.DefaultHttpxClient(event_hooks={"request": [_both_sent]})
    return anthropic.Anthropic(base_url=gateway.url, max_retries=0, timeout=20, http_client=http, **auth)


def test_bearer_alone_is_accepted(gateway):
    msg = _claude(gateway, auth_token=CLIENT_KEY).messages.create(model="gpt-4o", max_tokens=10, messages=HI)
    assert msg.type == "message" and msg._request_id


def test_bearer_wins_over_a_wrong_x_api_key(gateway):
    claude = _claude(gateway, auth_token=CLIENT_KEY, default_headers={"x-api-key": "wrong-anthropic-key"})
    assert claude.messages.create(model="gpt-4o", max_tokens=10, messages=HI).type == "message"


def test_a_wrong_bearer_is_refused_even_beside_a_right_x_api_key(gateway):
    claude = _claude(gateway, auth_token="wrong-bearer-token", default_headers={"x-api-key": CLIENT_KEY})
    with pytest.raises(anthropic.AuthenticationError) as info:
        claude.messages.create(model="gpt-4o", max_tokens=10, messages=HI)
    assert info.value.status_code == 401 and info.value.body["error"]["type"] == "authentication_error"
    assert info.value.request_id == info.value.response.headers["x-request-id"]
    assert CLIENT_KEY not in info.value.response.text
