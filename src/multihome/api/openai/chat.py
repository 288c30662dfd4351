"""`POST /v1/chat/completions`: parse the OpenAI chat request, run it through the pipeline, render
the answer as it came (unary JSON or an SSE stream relayed chunk by chunk)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from ...providers.base import UpstreamRequest
from ...routing.attempts import Served
from ...routing.catalog import DeploymentRuntime
from ...schema import estimate
from ...schema.chat import ParsedChat, parse_chat
from ..asgi import JSON, Header, Receive, Send, read_body
from ..big_bodies import OFF_LOOP_OVER
from ..pipeline import Call, Pipeline, finish_refused, finish_unary, stream_finisher
from ..render import send_failure, send_json, send_stream
from .errors import OPENAI, upstream_client_error


class ChatDoor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def handle(self, call: Call, receive: Receive, send: Send) -> None:
        body = await read_body(call.scope, receive, self.pipeline.max_body, self.pipeline.bodies)
        parsed = parse_chat(body) if len(body) <= OFF_LOOP_OVER else await self.pipeline.bodies.parse(parse_chat, body)
        served, headers = await self.pipeline.run(
            call,
            "chat",
            body,
            parsed,
            chat_request,
            chat_response,
            chat=parsed.request,
            max_output=estimate.output_tokens(parsed.request),
            forward_usage=parsed.include_usage,
        )
        if served.stream is not None:
            await send_stream(call, receive, send, served, headers, stream_finisher(call, served))
        else:
            await send_unary(call, send, served, headers)


def chat_request(parsed: ParsedChat, dep: DeploymentRuntime) -> Awaitable[UpstreamRequest]:
    return dep.adapter.chat_request(parsed, dep.upstream_model)  # awaited by the caller: one coroutine less


def chat_response(dep: DeploymentRuntime, body: bytes, headers: Any) -> bytes:
    return dep.adapter.chat_response(body, dep.upstream_model)


async def send_unary(call: Call, send: Send, served: Served, headers: list[Header]) -> None:
    """A unary answer as the deployment gave it (already OpenAI-shaped), or its 4xx in OpenAI's envelope."""
    if served.status >= 400:
        err = upstream_client_error(served)
        await send_failure(call, send, OPENAI, err, headers)
        finish_refused(call, served, err, "client_error")
        return
    if call.tracker is not None:
        finish_unary(call, served, served.body)
    await send_json(call, send, served.status, served.body, [JSON, *headers])
