"""Azure OpenAI: deployment URLs with api-version, or the /openai/v1/ form; api-key or Entra ID.

Bodies are OpenAI-shaped, so they pass through; Azure's content-filter signals become refusals.
"""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from ...config import Provider
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
from ...schema.peek import ResponsePeek
from ..api_key import api_key_of
from ..base import UpstreamRequest
from ..entra import AuthHeaders, EntraTokens, entra_tokens
from ..passthrough import PassThrough, chat_body, passthrough_body, responses_body
from . import KIND

# The Entra ID scope of Azure OpenAI when the config names none (protocols.md, Azure auth).
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"


class AzureAdapter(PassThrough):
    kind = KIND.name

    def __init__(self, endpoint: str, api_version: str, api_key: str | None, entra: EntraTokens | None) -> None:
        self.base = endpoint.rstrip("/")
        self.v1 = api_version == "v1"
        self.api_version = api_version
        static = {"content-type": "application/json"}
        if api_key:
            static["api-key"] = api_key
        self._auth = AuthHeaders(static, entra)

    def _url(self, deployment: str, operation: str) -> str:
        if self.v1:
            return f"{self.base}/openai/v1/{operation}"
        return f"{self.base}/openai/deployments/{quote(deployment, safe='')}/{operation}?api-version={self.api_version}"

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body = chat_body(parsed, upstream_model)
        return UpstreamRequest(self._url(upstream_model, "chat/completions"), await self._auth.get(), body)

    async def responses_request(self, raw: dict[str, msgspec.Raw], upstream_model: str) -> UpstreamRequest:
        # The Responses API is served on the v1 form only, whatever api-version chat calls use; the body's
        # `model` names the deployment there.
        body, decoder = responses_body(raw, upstream_model)
        url = f"{self.base}/openai/v1/responses"
        return UpstreamRequest(url, await self._auth.get(), body, stream_decoder=decoder)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        body = passthrough_body(parsed.raw, upstream_model)
        return UpstreamRequest(self._url(upstream_model, "embeddings"), await self._auth.get(), body)

    def skip_stream_chunk(self, peek: ResponsePeek) -> bool:
        # Azure's first chunk often carries only prompt_filter_results with `choices: []`;
        # clients that index choices[0] break on it, so it is not forwarded.
        return not peek.choices and peek.usage is None and not peek.has_error

    async def close(self) -> None:
        await self._auth.close()


def build(name: str, provider: Provider, stored_key: str | None = None) -> AzureAdapter:
    where = f"providers.{name}.auth"
    api_key = api_key_of(provider, stored_key, what=f"{where}.api_key_env")
    entra = entra_tokens(provider.auth.entra, where, ENTRA_SCOPE)
    return AzureAdapter(KIND.endpoint(provider), provider.api_version or "2024-10-21", api_key, entra)
