"""AWS Bedrock Runtime: Converse / ConverseStream for chat, InvokeModel for embeddings.

Requests are translated (request.py), signed (auth.py) and streams decoded from the binary AWS
event-stream (stream.py). Errors are read from `x-amzn-ErrorType` / `__type`.
Rules: docs/translation/bedrock.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import msgspec
import yarl

from ...config import Provider
from ...schema.bounded import Decoder
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
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
from ..errors import classify_http, retry_after_seconds
from . import KIND, embeddings
from .auth import AwsCredentials, BearerSigner, SigV4Signer
from .embeddings import INPUT_TOKENS_HEADER
from .request import converse_body
from .response import chat_completion
from .stream import ConverseStreamDecoder

_JSON = {"content-type": "application/json"}
_STREAM = {"content-type": "application/json", "accept": "application/vnd.amazon.eventstream"}

# Bedrock exception name -> routing outcome (names not listed fall back to the HTTP status).
EXCEPTIONS = {
    "ThrottlingException": CAPACITY,
    "ServiceQuotaExceededException": CAPACITY,
    "ServiceUnavailableException": UNAVAILABLE,
    "InternalServerException": UNAVAILABLE,
    "ModelNotReadyException": UNAVAILABLE,
    "ModelTimeoutException": UNAVAILABLE,
    "ModelErrorException": UNAVAILABLE,
    "ModelStreamErrorException": UNAVAILABLE,
    "ValidationException": CLIENT_ERROR,
    "AccessDeniedException": CLIENT_ERROR,
    "UnrecognizedClientException": CLIENT_ERROR,
    "InvalidSignatureException": CLIENT_ERROR,
    "ExpiredTokenException": CLIENT_ERROR,
    "ResourceNotFoundException": CLIENT_ERROR,
    "ConflictException": CLIENT_ERROR,
}
# Bedrock's words for "the prompt does not fit the model's context window".
_TOO_LONG = ("too long", "too many tokens", "input is too large", "context window", "maximum context length")


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    Message: str | None = None
    type_: str | None = msgspec.field(default=None, name="__type")


_error_body = Decoder(_ErrorBody)


def error_name(headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """(exception name, message) from `x-amzn-ErrorType` (preferred, as botocore does) or `__type`."""
    try:
        err = _error_body.decode(body)
    except msgspec.DecodeError:
        err = _ErrorBody()
    raw = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype") or err.type_ or ""
    # "ThrottlingException:http://internal.amazon.com/..." or "com.amazon.coral.validate#ValidationException"
    name = raw.split(":", 1)[0].rsplit("#", 1)[-1] or None
    return name, err.message or err.Message or ""


def is_context_overflow(message: str) -> bool:
    low = message.lower()
    return any(phrase in low for phrase in _TOO_LONG)


class BedrockAdapter(AdapterBase):
    kind = KIND.name

    def __init__(self, name: str, endpoint: str, signer: BearerSigner | SigV4Signer) -> None:
        self.name = name
        self.base = endpoint.rstrip("/")
        self._signer = signer
        self._urls: dict[tuple[str, str], yarl.URL] = {}

    def _url(self, model: str, operation: str) -> yarl.URL:
        url = self._urls.get((model, operation))
        if url is None:
            # The model id is one percent-encoded path label (`:` -> %3A, ARN `/` -> %2F), exactly
            # as botocore sends it. `encoded=True` keeps aiohttp from re-normalising it: the bytes
            # on the wire must be the ones that were signed.
            url = yarl.URL(f"{self.base}/model/{quote(model, safe='')}/{operation}", encoded=True)
            if len(self._urls) < 4096:
                self._urls[(model, operation)] = url
        return url

    async def _request(self, url: yarl.URL, body: bytes, base: dict[str, str], dropped: list[str]) -> UpstreamRequest:
        headers = await self._signer.headers(str(url), body, base)
        # UpstreamRequest.url is normally a str; aiohttp accepts the yarl.URL as is (see _url).
        return UpstreamRequest(url, headers, body, dropped)  # type: ignore[arg-type]

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body, dropped = converse_body(parsed)
        if parsed.stream:
            return await self._request(self._url(upstream_model, "converse-stream"), body, _STREAM, dropped)
        return await self._request(self._url(upstream_model, "converse"), body, _JSON, dropped)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        body, dropped = embeddings.invoke_body(parsed, upstream_model)
        return await self._request(self._url(upstream_model, "invoke"), body, _JSON, dropped)

    def chat_response(self, body: bytes, upstream_model: str) -> bytes:
        return chat_completion(body, upstream_model)

    def embeddings_response(self, body: bytes, upstream_model: str, headers: Mapping[str, str]) -> bytes:
        return embeddings.openai_embeddings(body, upstream_model, headers.get(INPUT_TOKENS_HEADER))

    def stream_decoder(self, upstream_model: str) -> ConverseStreamDecoder:
        return ConverseStreamDecoder(upstream_model)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified:
        name, message = error_name(headers, body)
        kind = EXCEPTIONS.get(name or "")
        if kind is None:
            return classify_http(status, headers, body)
        if name == "ValidationException" and is_context_overflow(message):
            return Classified(CONTEXT_OVERFLOW, CONTEXT_OVERFLOW_LABEL)
        return Classified(kind, f"http_{status}", retry_after_seconds(headers) if kind != CLIENT_ERROR else None)

    def client_error_body(self, status: int, body: bytes) -> bytes:
        """A Bedrock 4xx body (`{"message"}`) in OpenAI's envelope, for the front door: the code is
        `context_length_exceeded` for an over-long prompt, else the exception name when the body
        carries one (`__type`; the `x-amzn-ErrorType` header is not passed to this hook)."""
        name, message = error_name({}, body)
        code = "context_length_exceeded" if is_context_overflow(message) else name
        text = f"AWS Bedrock: {message}" if message else f"AWS Bedrock error (HTTP {status})."
        return msgspec.json.encode(
            {"error": {"message": text, "type": "invalid_request_error", "param": None, "code": code}}
        )


def build(name: str, provider: Provider, stored_key: str | None = None) -> BedrockAdapter:
    where = f"providers.{name}"
    region = provider.region
    if region is None:  # a loaded config has one (KIND.requires); this is for one built by hand
        raise ValueError(f"{where}: a bedrock provider needs a region")
    endpoint = KIND.endpoint(provider)
    api_key = api_key_of(provider, stored_key, what=f"{where}.auth.api_key_env")
    signer: BearerSigner | SigV4Signer
    if api_key or provider.auth.api_key_from == "store":  # a stored key not set yet: no credential, not the chain
        signer = BearerSigner(api_key or "")
    else:
        signer = SigV4Signer(AwsCredentials(name, region, provider.auth.aws), region)
    return BedrockAdapter(name, endpoint, signer)
