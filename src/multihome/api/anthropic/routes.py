"""Anthropic-compatible front door: `POST /v1/messages` for Claude-native clients, and
`POST /v1/messages/count_tokens` (the gateway's estimate, decided by policy as a message; no upstream is called).

The request is translated into the canonical OpenAI chat request and runs through the same
pipeline as `/v1/chat/completions` (api/pipeline.py), so policy, routing, failover, accounting
and the `x-multihome-*` headers are identical; the answer (or stream) is translated back. The
route table (api/routes.py) identifies these calls the way Anthropic's API does (`x-api-key`)
and answers their errors in Anthropic's envelope (errors.py).
"""

from __future__ import annotations

from typing import cast

import msgspec

from ...routing.stream_relay import StreamRelay
from ...schema import estimate
from ...schema.anthropic import ParsedMessages, parse_messages
from ...schema.chat import ParsedChat
from ...schema.errors import ApiError
from ..asgi import JSON, Header, Receive, Send, read_body
from ..big_bodies import OFF_LOOP_OVER
from ..openai.chat import chat_request, chat_response
from ..openai.errors import upstream_client_error
from ..pipeline import Call, Pipeline, finish_refused, finish_unary, narrowing, stream_finisher
from ..render import send_failure, send_json, send_stream
from .errors import ANTHROPIC
from .stream import AnthropicStream, TranslatedRelay
from .translate import to_anthropic, to_canonical


class AnthropicDoor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline  # the same catalog, router, body limit and accounting as the OpenAI door

    async def count_tokens(self, call: Call, receive: Receive, send: Send) -> None:
        """`{"input_tokens": N}` for a Messages body, by the estimate routing uses (routing/estimate.py:
        about four characters a token, a flat count per image), not the model's tokenizer."""
        raw = await read_body(call.scope, receive, self.pipeline.max_body, self.pipeline.bodies)
        model, tokens, fields = await self.pipeline.bodies.decode(_counted, raw)  # a large body on the pool
        group = self.pipeline.group(model)  # an unknown model is a 404, as on /v1/messages
        call.group = group.name
        narrowing(call.scope, fields, group)  # what /v1/messages refuses of it (a repeated header, a foreign name)
        # Policy decides as for /v1/messages (403 when it refuses); a read-only key counts, as it may explain a route.
        self.pipeline.admit(call, group, "messages")
        if not group.can("chat"):  # an embeddings group: /v1/messages would refuse the body, so no count
            lacking = "; ".join(f"{d.name}: lacks chat" for d in group.deployments)
            raise ApiError(
                400,
                f"No deployment of model '{group.name}' can take this request ({lacking}). Use another model.",
                param="model",
                code="unsupported_capability",
            )
        body = msgspec.json.encode({"input_tokens": tokens})
        await send_json(call, send, 200, body, [JSON, *_ids(call)])

    async def messages(self, call: Call, receive: Receive, send: Send) -> None:
        raw = await read_body(call.scope, receive, self.pipeline.max_body, self.pipeline.bodies)
        if len(raw) <= OFF_LOOP_OVER:
            parsed = parse_messages(raw)
            canonical, dropped = to_canonical(parsed)
        else:  # decoded, checked and translated on a thread (api/big_bodies.py)
            parsed, (canonical, dropped) = await self.pipeline.bodies.parse(_translated, raw)
        # forward_usage: the usage-only last chunk must reach the converter (message_delta needs it).
        served, headers = await self.pipeline.run(
            call,
            "messages",
            raw,
            canonical,
            chat_request,
            chat_response,
            chat=canonical.request,
            max_output=parsed.request.max_tokens,
            forward_usage=True,
            dropped=dropped,
            output_param="max_tokens",
        )
        headers.append((b"request-id", call.request_id))  # the anthropic SDK's name for it (errors.ANTHROPIC)
        if served.stream is not None:
            converter = AnthropicStream(parsed.request, served.stream.start_usage)
            first = converter.feed(served.first)
            relay = cast(StreamRelay, TranslatedRelay(served.stream, converter))  # the same rest()/close()/cut()
            translated = msgspec.structs.replace(served, first=first, stream=relay)
            await send_stream(call, receive, send, translated, headers, stream_finisher(call, served))
            return
        if served.status >= 400:
            err = upstream_client_error(served)
            await send_failure(call, send, ANTHROPIC, err, headers)
            finish_refused(call, served, err, "client_error")
            return
        try:
            body = to_anthropic(served.body, parsed.request, served.deployment.name)
        except ApiError as err:
            await send_failure(call, send, ANTHROPIC, err, headers)
            finish_refused(call, served, err, "gateway_error")  # answered upstream, not deliverable here
            return
        finish_unary(call, served, body)
        await send_json(call, send, served.status, body, [JSON, *headers])


def _ids(call: Call) -> list[Header]:
    return [(name, call.request_id) for name in ANTHROPIC.request_id_headers]


def _counted(raw: bytes) -> tuple[str, int, dict[str, msgspec.Raw]]:
    """A count_tokens body's model, its estimated prompt tokens and its top-level fields as translated."""
    canonical, _ = to_canonical(parse_messages(raw, counting=True))
    return canonical.request.model, estimate.prompt_tokens(canonical.request), canonical.raw


def _translated(raw: bytes) -> tuple[ParsedMessages, tuple[ParsedChat, list[str]]]:
    parsed = parse_messages(raw)
    return parsed, to_canonical(parsed)
