"""Bedrock's OpenAI-compatible Chat Completions endpoint (`bedrock_openai`): the URL from the region
or the endpoint, the body passed through with only `model` replaced, SigV4 or a Bedrock API key,
embeddings refused, and the region's data zone."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from builders import api_keys, provider, single, typed
from multihome.providers.registry import build_adapter
from multihome.routing.catalog import Catalog
from multihome.schema.chat import parse_chat
from multihome.schema.embeddings import parse_embeddings
from multihome.schema.errors import ApiError

RAW = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high", "seed": 7}
MODEL = "openai.gpt-oss-20b-1:0"


def _adapter(monkeypatch, **fields):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDCOMPATUNIT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "compat-unit-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = typed(
        single(provider("bedrock_openai", **{"region": "us-west-2", **fields}), server=api_keys("K"), model=MODEL)
    )
    return build_adapter("p", cfg.providers["p"]), cfg


@pytest.mark.parametrize(
    "endpoint",
    [
        None,
        "https://bedrock-runtime.us-west-2.amazonaws.com",
        "https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1",
    ],
)
def test_the_url_and_the_signed_pass_through_body(monkeypatch, endpoint):
    adapter, _ = _adapter(monkeypatch, **({"endpoint": endpoint} if endpoint else {}))
    request = asyncio.run(adapter.chat_request(parse_chat(msgspec.json.encode(RAW)), MODEL))
    assert str(request.url) == "https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1/chat/completions"
    assert msgspec.json.decode(request.body) == {**RAW, "model": MODEL}
    assert "/us-west-2/bedrock/aws4_request" in request.headers["Authorization"]


def test_a_bedrock_api_key_is_a_bearer(monkeypatch):
    monkeypatch.setenv("BR_KEY", "ABSKunit-key")
    adapter, _ = _adapter(monkeypatch, auth={"api_key_env": "BR_KEY"})
    request = asyncio.run(adapter.chat_request(parse_chat(msgspec.json.encode(RAW)), MODEL))
    assert request.headers["authorization"] == "Bearer ABSKunit-key" and "x-amz-date" not in request.headers


def test_embeddings_are_refused_with_a_clear_400(monkeypatch):
    adapter, _ = _adapter(monkeypatch)
    with pytest.raises(ApiError) as err:
        asyncio.run(adapter.embeddings_request(parse_embeddings(b'{"model": "e", "input": "x"}'), MODEL))
    assert err.value.status == 400 and "chat completions only" in str(err.value)


def test_the_region_fixes_the_data_zone(monkeypatch):
    _, cfg = _adapter(monkeypatch, region="eu-central-1")
    assert Catalog(cfg).deployments["d"].data_zone == "EU"
