"""Shared behaviour of adapters whose upstream already speaks OpenAI's schema: bytes pass through."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..schema.chat import ParsedChat
from .base import AdapterBase, Classified
from .errors import classify_http
from .responses_wire import ResponsesStreamDecoder
from .sse import SseSplitter

_encode = msgspec.json.encode
UpstreamRequestParts = tuple[bytes, ResponsesStreamDecoder]
# Ask every streaming upstream for usage so metering sees it; the relay hides it from clients
# that did not ask for it.
_USAGE_ON = msgspec.Raw(b'{"include_usage":true}')


def passthrough_body(raw: dict[str, msgspec.Raw], model: str, *, stream_usage: bool = False) -> bytes:
    body = dict(raw)
    body["model"] = msgspec.Raw(_encode(model))
    if stream_usage:
        body["stream_options"] = _USAGE_ON
    return _encode(body)


def chat_body(parsed: ParsedChat, model: str) -> bytes:
    """passthrough_body of a chat call for `model`, made once per call and model: re-encoding a 29 MiB body held
    the event loop ~11 ms on each attempt (a retry, a failover), though only `model` may differ between them."""
    last = parsed.upstream_body
    if last is not None and last[0] == model:
        return last[1]
    body = dict(parsed.raw)
    body["model"] = msgspec.Raw(_encode(model))
    if parsed.stream and not parsed.include_usage:  # (wants_stream_usage, inline: on every chat call)
        body["stream_options"] = _USAGE_ON
    encoded = _encode(body)
    parsed.upstream_body = (model, encoded)
    return encoded


def responses_body(raw: dict[str, msgspec.Raw], model: str) -> UpstreamRequestParts:
    """A native Responses body for `model`, and the decoder its stream (if any) is read with."""
    return passthrough_body(raw, model), ResponsesStreamDecoder()


def wants_stream_usage(parsed: ParsedChat) -> bool:
    return parsed.stream and not parsed.include_usage


class PassThrough(AdapterBase):
    """Mixin: responses and streams are already OpenAI-shaped; only errors need reading."""

    def chat_response(self, body: bytes, upstream_model: str) -> bytes:
        return body

    def embeddings_response(self, body: bytes, upstream_model: str, headers: Mapping[str, str]) -> bytes:
        return body

    def stream_decoder(self, upstream_model: str) -> SseSplitter:
        return SseSplitter()

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified:
        return classify_http(status, headers, body)
