"""`auth.api_key_from: store`: every kind that takes an API key sends the one the gateway opened from
the admin API's sealed store (passed to `build_adapter`), in the header its upstream expects, and
none at all before one is set; `api_key_env` providers ignore a stored key."""

from __future__ import annotations

import asyncio

import pytest

from multihome.config import Provider, ProviderAuth
from multihome.providers.registry import BY_NAME, KINDS, build_adapter
from multihome.schema.chat import parse_chat

KEY = "stored-upstream-key-7e21"
BODY = b'{"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}'
KEYED = [k.name for k in KINDS if "api_key_env" in k.auth_methods]


def _provider(kind: str, **auth: object) -> Provider:
    extra = {"region": "us-east-1"} if "region" in BY_NAME[kind].requires else {}
    return Provider(kind=kind, endpoint="http://127.0.0.1:9", auth=ProviderAuth(**auth), **extra)


def _headers(adapter) -> dict[str, str]:
    async def run():  # bedrock signs (or sets its bearer) here too
        return (await adapter.chat_request(parse_chat(BODY), "m")).headers

    return {k.lower(): v for k, v in asyncio.run(run()).items()}


@pytest.mark.parametrize("kind", KEYED)
def test_the_stored_key_is_sent(kind):
    assert len(KEYED) >= 5
    headers = _headers(build_adapter("p", _provider(kind, api_key_from="store"), KEY))
    assert any(KEY in v for v in headers.values()), headers
    none = _headers(build_adapter("p", _provider(kind, api_key_from="store"), None))
    assert not any(KEY in v for v in none.values())
    assert "x-amz-date" not in none  # bedrock without a stored key: no signature from the ambient chain


def test_an_env_provider_ignores_a_stored_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_ENV_KEY", "from-the-environment")
    headers = _headers(build_adapter("p", _provider("openai", api_key_env="MH_TEST_ENV_KEY"), KEY))
    assert headers["authorization"] == "Bearer from-the-environment"
