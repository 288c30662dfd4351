"""Anthropic-compatible front door: `POST /v1/messages` for Claude-native clients, and
`POST /v1/messages/count_tokens` (the gateway's estimate; no upstream is called).

The request is translated into the canonical OpenAI chat request and walks the same plan and
attempt loop as `/v1/chat/completions`, so routing, failover and the `x-multihome-*` headers
are identical; the answer (or stream) is translated back. These routes authenticate and
render their own errors, because Anthropic clients send `x-api-key` and expect Anthropic's
error envelope.
"""

from __future__ import annotations

import dataclasses
import logging

import msgspec

from ..identity.authenticator import Authenticator, credential_of
from ..schema import estimate
from ..schema.anthropic import parse_messages
from ..schema.errors import ApiError
from .anthropic_errors import send_anthropic_error
from .anthropic_stream import AnthropicStream, TranslatedRelay
from .anthropic_translate import to_anthropic, to_canonical
from .asgi import JSON, ClientGone, read_body, send_bytes
from .gateway import _check_content_type
from ..accounting.tracker import finish_failed
from .openai_routes import (
    OpenAIRoutes,
    admit_call,
    begin_call,
    durable,
    finish_unary,
    stream_finisher,
    _chat_response,
    _send_stream,
    _served_headers,
    _with_request_id,
    chat_shape,
    upstream_client_error,
)

log = logging.getLogger("multihome.anthropic")

_MISSING_KEY = ApiError(
    401,
    "Missing API key. Send 'x-api-key: <key>' or 'Authorization: Bearer <key>' with the key issued for this gateway "
    "(the anthropic SDK sends ANTHROPIC_API_KEY).",
    code="invalid_api_key",
)


class AnthropicRoutes:
    def __init__(self, openai: OpenAIRoutes, auth: Authenticator) -> None:
        self.openai = openai  # the same catalog, router and body limit as the OpenAI door
        self.auth = auth

    async def messages(self, scope, receive, send, request_id: bytes) -> None:
        await self._door(self._messages, scope, receive, send, request_id)

    async def count_tokens(self, scope, receive, send, request_id: bytes) -> None:
        await self._door(self._count_tokens, scope, receive, send, request_id)

    async def _door(self, route, scope, receive, send, request_id: bytes) -> None:
        """Authenticate like Anthropic's API, run `route`, answer every failure in Anthropic's envelope."""
        try:
            await self._authenticate(scope)
            _check_content_type(scope)
            await route(scope, receive, send, request_id)
        except ApiError as err:
            finish_failed(scope, err)
            await send_anthropic_error(send, err, [(b"x-request-id", request_id)], request_id)
        except ClientGone:
            return
        except Exception:
            log.exception("unexpected error serving POST %s (request %s)", scope["path"], request_id.decode())
            err = ApiError(500, "The gateway hit an unexpected error; it has been logged.", type="server_error")
            finish_failed(scope, err)
            try:
                await send_anthropic_error(send, err, [(b"x-request-id", request_id)], request_id)
            except Exception:
                pass  # the response had already started

    async def _authenticate(self, scope) -> None:
        if credential_of(scope) is None and not self.auth.open_access:
            raise _MISSING_KEY
        scope["multihome.principal"] = await self.auth.authenticate(scope)

    async def _count_tokens(self, scope, receive, send, request_id: bytes) -> None:
        """`{"input_tokens": N}` for a Messages body, by the estimate routing uses (routing/estimate.py:
        about four characters a token, a flat count per image), not the model's tokenizer."""
        parsed = parse_messages(await read_body(scope, receive, self.openai.max_body), counting=True)
        canonical, _ = to_canonical(parsed)
        self.openai._group(canonical.request.model)  # an unknown model is a 404, as on /v1/messages
        body = msgspec.json.encode({"input_tokens": estimate.prompt_tokens(canonical.request)})
        await send_bytes(send, 200, body, [JSON, (b"x-request-id", request_id)])

    async def _messages(self, scope, receive, send, request_id: bytes) -> None:
        raw = await read_body(scope, receive, self.openai.max_body)
        parsed = parse_messages(raw)
        canonical, dropped = to_canonical(parsed)
        group = self.openai._group(canonical.request.model)
        tracker = begin_call(scope, self.openai.accounting, request_id, "messages", raw, group, canonical.request)
        shape = chat_shape(scope, canonical, group, self.openai.gate, "messages")
        extra = await admit_call(tracker, group, shape, parsed.request.max_tokens)
        rid = request_id.decode()

        async def build(dep):
            return _with_request_id(await dep.adapter.chat_request(canonical, dep.upstream_model), rid)

        # forward_usage: the usage-only last chunk must reach the converter (message_delta needs it).
        served = await self.openai.router.route(group, shape, build, _chat_response, forward_usage=True)
        if dropped:
            served = dataclasses.replace(served, dropped=sorted({*dropped, *(served.dropped or ())}))
        await durable(tracker, served)
        headers = [*_served_headers(request_id, served), *extra]
        if served.stream is not None:
            converter = AnthropicStream(parsed.request)
            first = converter.feed(served.first)
            translated = dataclasses.replace(served, first=first, stream=TranslatedRelay(served.stream, converter))
            await _send_stream(scope, receive, send, translated, headers, stream_finisher(tracker, served))
            return
        if served.status >= 400:
            err = upstream_client_error(served)
            await send_anthropic_error(send, err, headers, request_id)
            if tracker is not None:
                tracker.finish(err.status, "client_error", served=served, error_code=err.body.code)
            return
        try:
            body = to_anthropic(served.body, parsed.request, served.deployment.name)
        except ApiError as err:
            await send_anthropic_error(send, err, headers, request_id)
            if tracker is not None:
                tracker.finish(err.status, "stream_error", served=served, error_code=err.body.code)
            return
        await send_bytes(send, served.status, body, [JSON, *headers])
        if tracker is not None:
            finish_unary(tracker, served, body)
