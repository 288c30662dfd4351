"""`POST /v1/embeddings`: parse the OpenAI embeddings request, run it through the pipeline, render
the deployment's answer (translated to OpenAI's shape by its adapter)."""

from __future__ import annotations

from typing import Any

from ...providers.base import UpstreamRequest
from ...routing.catalog import DeploymentRuntime
from ...schema.embeddings import ParsedEmbeddings, parse_embeddings
from ..asgi import Receive, Send, read_body
from ..big_bodies import OFF_LOOP_OVER
from ..pipeline import Call, Pipeline
from .chat import send_unary


class EmbeddingsDoor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def handle(self, call: Call, receive: Receive, send: Send) -> None:
        body = await read_body(call.scope, receive, self.pipeline.max_body, self.pipeline.bodies)
        if len(body) <= OFF_LOOP_OVER:
            parsed = parse_embeddings(body)
        else:
            parsed = await self.pipeline.bodies.parse(parse_embeddings, body)
        # Embeddings produce no output tokens: nothing to reserve for them.
        served, headers = await self.pipeline.run(
            call, "embeddings", body, parsed, embeddings_request, embeddings_response, max_output=0
        )
        await send_unary(call, send, served, headers)


async def embeddings_request(parsed: ParsedEmbeddings, dep: DeploymentRuntime) -> UpstreamRequest:
    return await dep.adapter.embeddings_request(parsed, dep.upstream_model)


def embeddings_response(dep: DeploymentRuntime, body: bytes, headers: Any) -> bytes:
    return dep.adapter.embeddings_response(body, dep.upstream_model, headers)
