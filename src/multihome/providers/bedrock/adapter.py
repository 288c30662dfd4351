"""AWS Bedrock Runtime: Converse / ConverseStream for chat, InvokeModel for embeddings.

Requests are translated (request.py), signed (../aws.py) and streams decoded from the binary AWS
event-stream (stream.py). Errors are read from `x-amzn-ErrorType` / `__type`.
Rules: docs/translation/bedrock.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...config import Provider
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
from ..aws import JSON_HEADERS, STREAM_HEADERS, Runtime, classify, client_error_body, runtime
from ..base import (
    AdapterBase,
    Classified,
    UpstreamRequest,
)
from . import KIND, embeddings
from .embeddings import INPUT_TOKENS_HEADER
from .request import converse_body
from .response import chat_completion
from .stream import ConverseStreamDecoder


class BedrockAdapter(AdapterBase):
    kind = KIND.name

    def __init__(self, runtime: Runtime) -> None:
        self.name = runtime.provider
        self._runtime = runtime

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body, dropped = converse_body(parsed, upstream_model)
        if parsed.stream:
            return await self._runtime.request(upstream_model, "converse-stream", body, STREAM_HEADERS, dropped)
        return await self._runtime.request(upstream_model, "converse", body, JSON_HEADERS, dropped)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        body, dropped = embeddings.invoke_body(parsed, upstream_model)
        return await self._runtime.request(upstream_model, "invoke", body, JSON_HEADERS, dropped)

    def chat_response(self, body: bytes, upstream_model: str) -> bytes:
        return chat_completion(body, upstream_model)

    def embeddings_response(self, body: bytes, upstream_model: str, headers: Mapping[str, str]) -> bytes:
        return embeddings.openai_embeddings(body, upstream_model, headers.get(INPUT_TOKENS_HEADER))

    def stream_decoder(self, upstream_model: str) -> ConverseStreamDecoder:
        return ConverseStreamDecoder(upstream_model)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified:
        return classify(status, headers, body)

    def client_error_body(self, status: int, body: bytes) -> bytes:
        return client_error_body(status, body)


def build(name: str, provider: Provider, stored_key: str | None = None) -> BedrockAdapter:
    return BedrockAdapter(runtime(name, provider, KIND.endpoint(provider), stored_key))
