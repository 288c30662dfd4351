"""Azure OpenAI: deployment URLs with api-version, or the /openai/v1/ form; api-key or Entra ID.

Bodies are OpenAI-shaped, so they pass through; Azure's content-filter signals become refusals.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

from ..config import EntraAuth, env_secret
from ..schema.chat import ParsedChat
from ..schema.embeddings import ParsedEmbeddings
from ..schema.peek import ResponsePeek
from .base import UpstreamRequest
from .passthrough import PassThrough, passthrough_body, wants_stream_usage

# Refresh Entra tokens this long before they expire, so no call waits on a refresh at the edge.
_REFRESH_MARGIN_S = 300


class EntraTokens:
    """Bearer tokens from azure-identity, cached until shortly before expiry; one refresh at a time."""

    def __init__(self, auth: EntraAuth, where: str) -> None:
        from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential

        ids = (auth.tenant_id_env, auth.client_id_env, auth.client_secret_env)
        if any(ids):
            if not all(ids):
                raise ValueError(f"{where}: set tenant_id_env, client_id_env and client_secret_env together")
            self._credential = ClientSecretCredential(
                env_secret(auth.tenant_id_env, what=f"{where}.tenant_id_env"),
                env_secret(auth.client_id_env, what=f"{where}.client_id_env"),
                env_secret(auth.client_secret_env, what=f"{where}.client_secret_env"),
            )
        else:
            self._credential = DefaultAzureCredential()
        self._scope = auth.scope
        self._token = ""
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    async def bearer(self) -> str:
        if time.time() < self._expires_on - _REFRESH_MARGIN_S:
            return self._token
        async with self._lock:
            if time.time() >= self._expires_on - _REFRESH_MARGIN_S:
                token = await self._credential.get_token(self._scope)
                self._token, self._expires_on = token.token, float(token.expires_on)
        return self._token

    async def close(self) -> None:
        await self._credential.close()


class AzureAdapter(PassThrough):
    kind = "azure"

    def __init__(self, endpoint: str, api_version: str, api_key: str | None, entra: EntraTokens | None) -> None:
        self.base = endpoint.rstrip("/")
        self.v1 = api_version == "v1"
        self.api_version = api_version
        self._entra = entra
        self._static = {"content-type": "application/json"}
        if api_key:
            self._static["api-key"] = api_key

    async def _auth_headers(self) -> dict[str, str]:
        if self._entra is None:
            return self._static
        return {**self._static, "authorization": f"Bearer {await self._entra.bearer()}"}

    def _url(self, deployment: str, operation: str) -> str:
        if self.v1:
            return f"{self.base}/openai/v1/{operation}"
        return f"{self.base}/openai/deployments/{quote(deployment, safe='')}/{operation}?api-version={self.api_version}"

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body = passthrough_body(parsed.raw, upstream_model, stream_usage=wants_stream_usage(parsed))
        return UpstreamRequest(self._url(upstream_model, "chat/completions"), await self._auth_headers(), body)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        body = passthrough_body(parsed.raw, upstream_model)
        return UpstreamRequest(self._url(upstream_model, "embeddings"), await self._auth_headers(), body)

    def skip_stream_chunk(self, peek: ResponsePeek) -> bool:
        # Azure's first chunk often carries only prompt_filter_results with `choices: []`;
        # clients that index choices[0] break on it, so it is not forwarded.
        return not peek.choices and peek.usage is None and not peek.has_error

    async def close(self) -> None:
        if self._entra is not None:
            await self._entra.close()


def build(name: str, provider) -> AzureAdapter:
    where = f"providers.{name}.auth"
    api_key = env_secret(provider.auth.api_key_env, what=f"{where}.api_key_env")
    entra = EntraTokens(provider.auth.entra, f"{where}.entra") if provider.auth.entra else None
    return AzureAdapter(provider.endpoint, provider.api_version or "2024-10-21", api_key, entra)
