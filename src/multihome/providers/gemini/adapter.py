"""Google Gemini API (`gemini` kind, API key) and Vertex AI (`vertex` kind, OAuth via google-auth).

Both speak `generateContent`; they differ in URL, auth and the embeddings call. Translation lives
in request.py, response.py (answers, embeddings) and stream.py.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import msgspec

from ...config import ConfigError, GoogleAuth, Provider
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
    CREDENTIALS_REJECTED,
    UNAVAILABLE,
    AdapterBase,
    Classified,
    UpstreamRequest,
)
from ..errors import retry_after_seconds
from ..google import GoogleTokens, bearer_header
from ..openai_out import embedding_base64
from . import KIND, VERTEX
from . import response as gr
from .request import PROVIDER, check_params, request_body
from .stream import GeminiStreamDecoder

_encode = msgspec.json.encode
# The client's embeddings encoding_format, set while building the upstream request and read when
# translating its answer: both run in the same request task, and the Adapter interface does not
# hand the request to embeddings_response (a ContextVar keeps concurrent requests apart).
_EMBED_FORMAT: contextvars.ContextVar[str] = contextvars.ContextVar("gemini_embed_format", default="float")
# Google's wording for an over-long prompt, e.g. "The input token count (1200000) exceeds the
# maximum number of tokens allowed (1048576)."
_TOO_LONG = re.compile(r"token count.*exceeds|exceeds the maximum number of tokens|too many tokens", re.I)


class _GoogleErrorInner(msgspec.Struct):
    code: int | None = None
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] = []


class _GoogleErrorBody(msgspec.Struct):
    error: _GoogleErrorInner | None = None


_error_decoder = Decoder(_GoogleErrorBody)


def _google_error(body: bytes) -> _GoogleErrorInner:
    try:
        err = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        err = None
    return err or _GoogleErrorInner()


def _retry_delay(err: _GoogleErrorInner) -> float | None:
    """`google.rpc.RetryInfo.retryDelay` ("20s", "1.5s") from the error details."""
    for detail in err.details:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def one_instance_per_request(model: str) -> bool:
    """Vertex AI's Gemini embedding models (gemini-embedding-001) take a single instance per `:predict`
    request; the older text-embedding models take a list (docs/translation/gemini.md)."""
    return model.rsplit("/", 1)[-1].startswith("gemini-embedding")


class GeminiAdapter(AdapterBase):
    def __init__(
        self, kind: str, base: str, *, api_key: str | None = None, tokens: GoogleTokens | None = None, name: str = ""
    ) -> None:
        self.kind = kind
        self.vertex = kind == VERTEX.name
        self.base = base.rstrip("/")
        self.name = name
        self._tokens = tokens
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["x-goog-api-key"] = api_key

    # -- requests ------------------------------------------------------------------------
    def model_url(self, model: str, method: str) -> str:
        """`{base}/<version>/<model resource>:<method>`; `model` may already be a resource path."""
        if self.vertex:
            return f"{self.base}/{self.resource}/publishers/google/models/{quote(model, safe='')}:{method}"
        resource = model if "/" in model else f"models/{quote(model, safe='')}"
        return f"{self.base}/v1beta/{resource}:{method}"

    resource = ""  # vertex: "v1/projects/{project}/locations/{region}", set by build()

    async def _auth_headers(self) -> dict[str, str]:
        if self._tokens is None:
            return self._headers
        return {**self._headers, "authorization": await bearer_header(self._tokens, self.name)}

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        dropped = check_params(parsed)
        if any(m.thinking_blocks for m in parsed.request.messages):
            # Claude's signed blocks (or another upstream's reasoning): Gemini takes back only its own signatures.
            dropped.append("messages[].thinking_blocks")
        body = _encode(request_body(parsed, vertex=self.vertex, model=upstream_model))
        method = "streamGenerateContent?alt=sse" if parsed.stream else "generateContent"
        return UpstreamRequest(self.model_url(upstream_model, method), await self._auth_headers(), body, dropped)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        req = parsed.request
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not all(isinstance(t, str) for t in texts):
            raise bad_request(
                f"'input' must be text when the request is served by {PROVIDER} (token arrays cannot be sent).",
                param="input",
                code="unsupported_parameter",
            )
        dropped = ["user"] if req.user else []
        _EMBED_FORMAT.set(req.encoding_format or "float")
        if self.vertex:
            params = {"parameters": {"outputDimensionality": req.dimensions}} if req.dimensions is not None else {}
            url = self.model_url(upstream_model, "predict")
            if one_instance_per_request(upstream_model) and len(texts) > 1:
                # Google's gemini-embedding models take one instance per :predict: one call per input.
                pieces = [_encode({"instances": [{"content": t}], **params}) for t in texts]
                headers = await self._auth_headers()
                return UpstreamRequest(url, headers, b"", dropped, fan_out=pieces, join=gr.join_predictions)
            body: dict[str, Any] = {"instances": [{"content": t} for t in texts], **params}
        else:
            resource = upstream_model if "/" in upstream_model else f"models/{upstream_model}"
            one: dict[str, Any] = {"model": resource}
            if req.dimensions is not None:
                one["outputDimensionality"] = req.dimensions
            body = {"requests": [{**one, "content": {"parts": [{"text": t}]}} for t in texts]}
            url = self.model_url(upstream_model, "batchEmbedContents")
        return UpstreamRequest(url, await self._auth_headers(), _encode(body), dropped)

    # -- responses -----------------------------------------------------------------------
    def chat_response(self, body: bytes, upstream_model: str) -> bytes:
        return gr.chat_completion(body, upstream_model)

    def stream_decoder(self, upstream_model: str) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(upstream_model)

    def embeddings_response(self, body: bytes, upstream_model: str, headers: Mapping[str, str]) -> bytes:
        vectors, tokens = gr.embedding_vectors(body, vertex=self.vertex)
        embeddings: list[list[float]] | list[str] = vectors
        if _EMBED_FORMAT.get() == "base64":
            embeddings = [embedding_base64(v) for v in vectors]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(embeddings)]
        return _encode(
            {
                "object": "list",
                "data": data,
                "model": upstream_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified:
        err = _google_error(body)
        label = f"http_{status}"
        if status == 429 or err.status == "RESOURCE_EXHAUSTED":
            retry = retry_after_seconds(headers)
            return Classified(CAPACITY, label, retry if retry is not None else _retry_delay(err))
        if status >= 500 or status == 408:
            return Classified(UNAVAILABLE, label, retry_after_seconds(headers))
        if err.status == "FAILED_PRECONDITION":
            # e.g. "User location is not supported for the API use": another deployment may serve it.
            return Classified(UNAVAILABLE, label)
        if status == 400 and _TOO_LONG.search(err.message):
            return Classified(CONTEXT_OVERFLOW, CONTEXT_OVERFLOW_LABEL)
        if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in err.details):
            # Google answers a bad API key with 400, but it is the gateway's credential that is wrong.
            return Classified(CLIENT_ERROR, CREDENTIALS_REJECTED)
        return Classified(CLIENT_ERROR, label)

    def client_error_body(self, status: int, body: bytes) -> bytes:
        """A Google error body in OpenAI's envelope (for the front door; see docs/translation/gemini.md)."""
        err = _google_error(body)
        code = "context_length_exceeded" if _TOO_LONG.search(err.message) else (err.status.lower() or None)
        return _encode(
            {
                "error": {
                    "message": err.message or f"HTTP {status}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }
        )

    async def close(self) -> None:
        if self._tokens is not None:
            await self._tokens.close()


def build(name: str, provider: Provider, stored_key: str | None = None) -> GeminiAdapter:
    where = f"providers.{name}"
    if provider.kind == KIND.name:
        api_key = api_key_of(provider, stored_key, what=f"{where}.auth.api_key_env")
        return GeminiAdapter(KIND.name, KIND.endpoint(provider), api_key=api_key, name=name)
    if provider.auth.api_key_env:
        raise ConfigError(f"{where}.auth.api_key_env: Vertex AI uses OAuth; set auth.google (or nothing for ADC)")
    project, region = provider.project, provider.region
    if project is None or region is None:  # a loaded config has both (VERTEX.requires); this is for one built by hand
        raise ValueError(f"{where}: a vertex provider needs a project and a region")
    tokens = GoogleTokens(provider.auth.google or GoogleAuth(), f"{where}.auth.google")
    adapter = GeminiAdapter(VERTEX.name, VERTEX.endpoint(provider), tokens=tokens, name=name)
    adapter.resource = f"v1/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}"
    return adapter
