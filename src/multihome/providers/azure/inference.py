"""Azure AI model inference API: the Chat Completions and Embeddings calls of Microsoft Foundry's
model catalogue (Llama, Mistral, DeepSeek, Phi, Cohere... deployed in a Foundry resource, or a
serverless endpoint), OpenAI-shaped, so bodies pass through.

URLs: `{endpoint}/chat/completions?api-version=...` and `{endpoint}/embeddings?...`, where the
endpoint is a Foundry resource's `https://<resource>.services.ai.azure.com/models` (the body's
`model` names the deployment) or a serverless `https://<name>.<region>.models.ai.azure.com`.
Auth: the key in `api-key` and as `Authorization: Bearer` (the official azure-ai-inference SDK
sends both, since resource endpoints read the first and serverless ones the second), or an Entra ID
token. `extra-parameters: pass-through` hands OpenAI parameters the API does not list to the model
rather than letting the service refuse them (its default) or drop them silently.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...config import Provider
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
from ..api_key import api_key_of
from ..base import UpstreamRequest
from ..entra import AuthHeaders, EntraTokens, entra_tokens
from ..passthrough import PassThrough, chat_body, passthrough_body
from . import INFERENCE
from .adapter import ENTRA_SCOPE, AzureAdapter

DEFAULT_API_VERSION = "2024-05-01-preview"  # the model inference API's version (azure-ai-inference's default)


def inference_base(endpoint: str) -> str:
    """The base every call is under: a bare Foundry resource URL gets its `/models` path."""
    base = endpoint.rstrip("/")
    parts = urlsplit(base)
    if not parts.path and (parts.hostname or "").endswith(".services.ai.azure.com"):
        base += "/models"
    return base


class AzureInferenceAdapter(PassThrough):
    kind = INFERENCE.name

    def __init__(self, endpoint: str, api_version: str, api_key: str | None, entra: EntraTokens | None) -> None:
        self.base = inference_base(endpoint)
        self._query = f"?api-version={api_version}"
        static = {"content-type": "application/json", "extra-parameters": "pass-through"}
        if api_key:
            static["api-key"] = api_key
            static["authorization"] = f"Bearer {api_key}"
        self._auth = AuthHeaders(static, entra)

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body = chat_body(parsed, upstream_model)
        return UpstreamRequest(f"{self.base}/chat/completions{self._query}", await self._auth.get(), body)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        body = passthrough_body(parsed.raw, upstream_model)
        return UpstreamRequest(f"{self.base}/embeddings{self._query}", await self._auth.get(), body)

    # Foundry's content safety opens streams with the same prompt-filter-only chunk as Azure OpenAI.
    skip_stream_chunk = AzureAdapter.skip_stream_chunk

    async def close(self) -> None:
        await self._auth.close()


def build(name: str, provider: Provider, stored_key: str | None = None) -> AzureInferenceAdapter:
    where = f"providers.{name}.auth"
    api_key = api_key_of(provider, stored_key, what=f"{where}.api_key_env")
    entra = entra_tokens(provider.auth.entra, where, ENTRA_SCOPE)
    return AzureInferenceAdapter(
        INFERENCE.endpoint(provider), provider.api_version or DEFAULT_API_VERSION, api_key, entra
    )
