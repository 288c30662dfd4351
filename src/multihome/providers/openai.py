"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp server).

Client API and upstream API are the same, so bodies pass through: only `model` is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..schema.chat import ParsedChat
from ..schema.embeddings import ParsedEmbeddings
from ..schema.peek import ResponsePeek
from .base import Classified, UpstreamRequest
from .errors import classify_http

_encode = msgspec.json.encode
# Ask every streaming upstream for usage so metering sees it; the relay hides it from clients
# that did not ask for it.
_USAGE_ON = msgspec.Raw(b'{"include_usage":true}')


def passthrough_body(raw: dict[str, msgspec.Raw], model: str, *, stream_usage: bool = False) -> bytes:
    body = dict(raw)
    body["model"] = msgspec.Raw(_encode(model))
    if stream_usage:
        body["stream_options"] = _USAGE_ON
    return _encode(body)


def wants_stream_usage(parsed: ParsedChat) -> bool:
    return parsed.stream and not parsed.include_usage


class OpenAIAdapter:
    kind = "openai"

    def __init__(self, endpoint: str, api_key: str | None) -> None:
        self.base = endpoint.rstrip("/")
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    async def auth_headers(self) -> dict[str, str]:
        return self._headers

    def chat_request(self, parsed: ParsedChat, upstream_model: str, auth: dict[str, str]) -> UpstreamRequest:
        body = passthrough_body(parsed.raw, upstream_model, stream_usage=wants_stream_usage(parsed))
        return UpstreamRequest(self.base + "/chat/completions", auth, body)

    def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str, auth: dict[str, str]) -> UpstreamRequest:
        return UpstreamRequest(self.base + "/embeddings", auth, passthrough_body(parsed.raw, upstream_model))

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified:
        return classify_http(status, headers, body)

    def is_refusal(self, peek: ResponsePeek) -> bool:
        return any(c.finish_reason == "content_filter" for c in peek.choices)

    def skip_stream_chunk(self, peek: ResponsePeek) -> bool:
        return False
