"""Anthropic Messages API (`POST {endpoint}/v1/messages`) as an upstream for OpenAI chat calls,
on Anthropic's API, on a Microsoft Foundry resource (`POST {resource}/anthropic/v1/messages`) or on
Vertex AI (`POST .../publishers/anthropic/models/{model}:rawPredict`, `:streamRawPredict`).

Translation lives beside this file: request.py (OpenAI -> Anthropic body), response.py
(message -> chat.completion), stream.py (SSE events -> chunks).
This module holds the transport-facing parts: URL, headers, error classification.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import msgspec

from ...config import GoogleAuth, Provider
from ...schema.bounded import Decoder
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
from ...schema.errors import bad_request
from ..api_key import api_key_of
from ..base import (
    CAPACITY,
    CLIENT_ERROR,
    CONTEXT_OVERFLOW,
    CONTEXT_OVERFLOW_LABEL,
    UNAVAILABLE,
    AdapterBase,
    Classified,
    UpstreamRequest,
)
from ..entra import AuthHeaders, EntraTokens, entra_tokens
from ..errors import retry_after_seconds
from ..google import GoogleTokens, bearer_header
from . import DEFAULT_ENDPOINT, FOUNDRY, KIND, VERTEX, response
from .request import build_body
from .stream import AnthropicStreamDecoder

DEFAULT_VERSION = "2023-06-01"
# Entra ID scope of a Foundry resource's Anthropic endpoint when the config names none (the scope
# the anthropic SDK's AnthropicFoundry docs use).
FOUNDRY_ENTRA_SCOPE = "https://ai.azure.com/.default"
# Vertex AI takes the Messages body with this in the body instead of the header, and no `model`
# (the model is in the URL): Anthropic's Vertex docs and the SDK's AnthropicVertex.
VERTEX_VERSION = "vertex-2023-10-16"
_encode = msgspec.json.encode


class _ErrorInner(msgspec.Struct):
    type: str | None = None
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorInner | None = None


_error_body = Decoder(_ErrorBody)


def error_of(body: bytes) -> _ErrorInner:
    try:
        return _error_body.decode(body).error or _ErrorInner()
    except msgspec.DecodeError:
        return _ErrorInner()


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Classified:
    """Anthropic statuses and error types -> routing outcome (docs/translation/anthropic.md)."""
    err = error_of(body)
    label = f"http_{status}"
    retry_after = retry_after_seconds(headers)
    if status in (429, 529) or err.type in ("rate_limit_error", "overloaded_error"):
        return Classified(CAPACITY, label, retry_after)
    if status == 408 or status >= 500 or err.type in ("api_error", "timeout_error"):
        return Classified(UNAVAILABLE, label, retry_after)
    if status == 402 or err.type == "billing_error":
        # The gateway's account with this provider cannot pay; another deployment may serve.
        return Classified(UNAVAILABLE, label)
    if err.message and "prompt is too long" in err.message:
        return Classified(CONTEXT_OVERFLOW, CONTEXT_OVERFLOW_LABEL)
    return Classified(CLIENT_ERROR, label)


class AnthropicAdapter(AdapterBase):
    kind = KIND.name

    def client_error_body(self, status: int, body: bytes) -> bytes:
        """Anthropic's error body in OpenAI's envelope, so clients get a code they know."""
        err = error_of(body)
        code = "context_length_exceeded" if err.message and "prompt is too long" in err.message else err.type
        return msgspec.json.encode(
            {
                "error": {
                    "message": err.message or f"HTTP {status}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }
        )

    def __init__(
        self,
        endpoint: str | None,
        api_key: str | None,
        version: str,
        *,
        kind: str = KIND.name,
        entra: EntraTokens | None = None,
    ) -> None:
        self.kind = kind
        base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        if kind == FOUNDRY.name and not base.endswith(("/anthropic", "/anthropic/v1")):
            # A Foundry resource URL (https://<resource>.services.ai.azure.com) serves Claude under
            # /anthropic/; the SDK's base_url form, which already ends in /anthropic, is taken as is.
            base += "/anthropic"
        # Accept both `https://api.anthropic.com` and `.../v1` as the configured endpoint.
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        static = {"content-type": "application/json", "anthropic-version": version}
        if api_key:
            # Foundry authenticates its Anthropic endpoint with x-api-key too (the anthropic SDK's
            # AnthropicFoundry sends it, and api-key only for older resources).
            static["x-api-key"] = api_key
        self._auth = AuthHeaders(static, entra)

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body, dropped = build_body(parsed, upstream_model)
        return UpstreamRequest(self.url, await self._auth.get(), _encode(body), dropped)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        raise bad_request(
            "Anthropic has no embeddings API; route embeddings to a deployment that has them.",
            param="model",
            code="unsupported_capability",
        )

    def chat_response(self, body: bytes, upstream_model: str) -> bytes:
        return response.chat_response(body, upstream_model)

    def embeddings_response(self, body: bytes, upstream_model: str, headers: Mapping[str, str]) -> bytes:
        raise ValueError("Anthropic has no embeddings API")

    def stream_decoder(self, upstream_model: str) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(upstream_model)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified:
        return classify(status, headers, body)

    async def close(self) -> None:
        await self._auth.close()


class VertexAnthropicAdapter(AnthropicAdapter):
    """Claude on Vertex AI: the same translation, a Vertex model URL, a Google OAuth bearer."""

    kind = VERTEX.name

    def __init__(self, name: str, endpoint: str, project: str, region: str, version: str, tokens: GoogleTokens) -> None:
        super().__init__(endpoint, None, version, kind=VERTEX.name)
        base = endpoint.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        self._models = (
            f"{base}/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}/publishers/anthropic/models/"
        )
        self.name = name
        self._version = version
        self._tokens = tokens

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body, dropped = build_body(parsed, upstream_model)
        del body["model"]  # Vertex names the model in the URL and refuses it in the body
        body["anthropic_version"] = self._version
        method = "streamRawPredict" if parsed.stream else "rawPredict"
        url = f"{self._models}{quote(upstream_model, safe='@')}:{method}"
        headers = {"content-type": "application/json", "authorization": await bearer_header(self._tokens, self.name)}
        return UpstreamRequest(url, headers, _encode(body), dropped)

    async def close(self) -> None:
        await self._tokens.close()


def build(name: str, provider: Provider, stored_key: str | None = None) -> AnthropicAdapter:
    where = f"providers.{name}.auth"
    if provider.kind == VERTEX.name:
        project, region = provider.project, provider.region
        if project is None or region is None:  # a loaded config has both (VERTEX.requires); one built by hand may not
            raise ValueError(f"providers.{name}: a vertex_anthropic provider needs a project and a region")
        tokens = GoogleTokens(provider.auth.google or GoogleAuth(), f"{where}.google")
        return VertexAnthropicAdapter(
            name, VERTEX.endpoint(provider), project, region, provider.api_version or VERTEX_VERSION, tokens
        )
    api_key = api_key_of(provider, stored_key, what=f"{where}.api_key_env")
    kind = FOUNDRY if provider.kind == FOUNDRY.name else KIND
    entra = entra_tokens(provider.auth.entra, where, FOUNDRY_ENTRA_SCOPE)
    return AnthropicAdapter(
        kind.endpoint(provider), api_key, provider.api_version or DEFAULT_VERSION, kind=kind.name, entra=entra
    )
