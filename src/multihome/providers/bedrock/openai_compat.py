"""OpenAI's open-weight models on Amazon Bedrock through Bedrock's OpenAI-compatible Chat
Completions endpoint (`bedrock_openai` kind): `POST https://bedrock-runtime.{region}.amazonaws.com/openai/v1/chat/completions`.

The client API and the upstream API are the same, so bodies and streams pass through (only `model`
becomes the Bedrock model id, e.g. `openai.gpt-oss-120b-1:0`); what is Bedrock's is who the gateway
is: a Bedrock API key as `Authorization: Bearer`, or a SigV4 signature (service `bedrock`) from
botocore's credential chain, as the openai SDK's `bedrock(endpoint="runtime")` provider signs.
Bedrock serves no other OpenAI operation on this endpoint. Rules: docs/translation/bedrock-openai.md.
"""

from __future__ import annotations

from ...config import Provider
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
from ...schema.errors import bad_request
from ..aws import JSON_HEADERS, Runtime, runtime
from ..base import UpstreamRequest
from ..passthrough import PassThrough, chat_body
from . import OPENAI


class BedrockOpenAIAdapter(PassThrough):
    kind = OPENAI.name

    def __init__(self, runtime: Runtime) -> None:
        self.name = runtime.provider
        self._runtime = runtime
        base = runtime.base if runtime.base.endswith("/openai/v1") else runtime.base + "/openai/v1"
        self._url = base + "/chat/completions"

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body = chat_body(parsed, upstream_model)
        return await self._runtime.signed(self._url, body, JSON_HEADERS, [])

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        raise bad_request(
            "Bedrock's OpenAI-compatible endpoint serves chat completions only; route embeddings to a "
            "deployment that has them (a `bedrock` provider serves Titan and Cohere embeddings).",
            param="model",
            code="unsupported_capability",
        )


def build(name: str, provider: Provider, stored_key: str | None = None) -> BedrockOpenAIAdapter:
    return BedrockOpenAIAdapter(runtime(name, provider, OPENAI.endpoint(provider), stored_key))
