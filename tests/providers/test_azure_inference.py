"""Azure AI model inference (`azure_inference`): URLs for a Foundry resource and a serverless
endpoint, the key in both headers the service reads, and `extra-parameters: pass-through`."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from builders import api_keys, provider, single, typed
from multihome.providers.base import native_responses
from multihome.providers.registry import build_adapter
from multihome.schema.chat import parse_chat
from multihome.schema.embeddings import parse_embeddings

CHAT = parse_chat(
    msgspec.json.encode({"model": "g", "messages": [{"role": "user", "content": "hi"}], "logprobs": True})
)
Q = "?api-version=2024-05-01-preview"


def _adapter(endpoint: str, monkeypatch: pytest.MonkeyPatch, **fields):
    monkeypatch.setenv("INF_KEY", "inference-key-1")
    cfg = typed(single(provider("azure_inference", endpoint, key_env="INF_KEY", **fields), server=api_keys("K")))
    return build_adapter("p", cfg.providers["p"])


@pytest.mark.parametrize(
    "endpoint, base",
    [
        ("https://res.services.ai.azure.com", "https://res.services.ai.azure.com/models"),
        ("https://res.services.ai.azure.com/", "https://res.services.ai.azure.com/models"),
        ("https://res.services.ai.azure.com/models", "https://res.services.ai.azure.com/models"),
        ("https://llama-x.eastus2.models.ai.azure.com", "https://llama-x.eastus2.models.ai.azure.com"),
    ],
)
def test_urls(endpoint, base, monkeypatch):
    adapter = _adapter(endpoint, monkeypatch)
    chat = asyncio.run(adapter.chat_request(CHAT, "Llama-3.3-70B-Instruct"))
    assert chat.url == f"{base}/chat/completions{Q}"
    embed = parse_embeddings(msgspec.json.encode({"model": "e", "input": ["a"]}))
    assert asyncio.run(adapter.embeddings_request(embed, "Cohere-embed-v3-english")).url == f"{base}/embeddings{Q}"


def test_headers_and_body(monkeypatch):
    adapter = _adapter("https://res.services.ai.azure.com", monkeypatch, api_version="2025-05-01")
    request = asyncio.run(adapter.chat_request(CHAT, "Llama-3.3-70B-Instruct"))
    assert request.url.endswith("?api-version=2025-05-01")
    assert request.headers["api-key"] == "inference-key-1"
    assert request.headers["authorization"] == "Bearer inference-key-1"
    assert request.headers["extra-parameters"] == "pass-through"
    body = msgspec.json.decode(request.body)
    assert body["model"] == "Llama-3.3-70B-Instruct" and body["logprobs"] is True  # passed through, not dropped


def test_no_native_responses_api(monkeypatch):
    """The model inference API has no Responses API: Responses calls are translated to chat."""
    assert native_responses(_adapter("https://res.services.ai.azure.com", monkeypatch)) is None
