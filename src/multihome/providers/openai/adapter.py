"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp server).

Client API and upstream API are the same, so bodies pass through: only `model` is replaced.
"""

from __future__ import annotations

import msgspec

from ...config import Provider
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
from ..api_key import api_key_of
from ..base import UpstreamRequest
from ..passthrough import PassThrough, chat_body, passthrough_body, responses_body
from . import KIND


class OpenAIAdapter(PassThrough):
    kind = KIND.name

    def __init__(self, endpoint: str, api_key: str | None) -> None:
        self.base = endpoint.rstrip("/")
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body = chat_body(parsed, upstream_model)
        return UpstreamRequest(self.base + "/chat/completions", self._headers, body)

    async def responses_request(self, raw: dict[str, msgspec.Raw], upstream_model: str) -> UpstreamRequest:
        body, decoder = responses_body(raw, upstream_model)
        return UpstreamRequest(self.base + "/responses", self._headers, body, stream_decoder=decoder)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        return UpstreamRequest(self.base + "/embeddings", self._headers, passthrough_body(parsed.raw, upstream_model))


def build(name: str, provider: Provider, stored_key: str | None = None) -> OpenAIAdapter:
    return OpenAIAdapter(
        KIND.endpoint(provider), api_key_of(provider, stored_key, what=f"providers.{name}.auth.api_key_env")
    )
