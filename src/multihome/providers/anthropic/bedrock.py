"""Claude on Amazon Bedrock through InvokeModel / InvokeModelWithResponseStream (`bedrock_anthropic`).

What Converse does not carry (thinking blocks with their signatures, prompt-caching markers,
Anthropic's beta features) goes through Bedrock's InvokeModel, whose body for Claude is Anthropic's
Messages body with `"anthropic_version": "bedrock-2023-05-31"` and neither `model` (the URL names it)
nor `stream` (the operation decides). The answer is a Messages answer; the stream is AWS
event-stream frames whose `chunk` events carry each Messages stream event, base64-encoded, in
`bytes`. The translation is the `anthropic` kind's; signing, URLs and error reading are Bedrock's
(`providers/aws.py`, shared with the `bedrock` kind). Rules: docs/translation/bedrock-anthropic.md.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import msgspec
from botocore.eventstream import EventStreamBuffer

from ...config import Provider
from ...schema.bounded import Decoder
from ...schema.chat import ParsedChat
from ...schema.embeddings import ParsedEmbeddings
from ...schema.errors import bad_request
from ...schema.peek import Usage
from ..aws import JSON_HEADERS, STREAM_HEADERS, Runtime, classify, client_error_body, runtime, stream_error_payload
from ..base import AdapterBase, Classified, UpstreamRequest
from . import BEDROCK, response
from .request import build_body
from .stream import AnthropicStreamDecoder

# Bedrock's version string for Claude's Messages body (Anthropic's and AWS's Bedrock docs).
BEDROCK_VERSION = "bedrock-2023-05-31"
_encode = msgspec.json.encode


class _Chunk(msgspec.Struct):
    bytes: str = ""


class _Frame(msgspec.Struct):
    """An event-stream `chunk` event's payload (an exception frame's `message` too)."""

    chunk: _Chunk | None = None
    bytes: str | None = None  # botocore's parser nests it in `chunk`; the wire payload has it at the top
    message: str | None = None


_frame = Decoder(_Frame)


class InvokeStreamDecoder:
    """InvokeModelWithResponseStream frames -> the Messages events inside -> OpenAI chunks."""

    __slots__ = ("_buf", "_events", "_done")

    def __init__(self, model: str) -> None:
        self._buf = EventStreamBuffer()
        self._events = AnthropicStreamDecoder(model)
        self._done = False

    @property
    def start_usage(self) -> Usage | None:
        """The prompt's usage from the stream's message_start (AnthropicStreamDecoder.start_usage)."""
        return self._events.start_usage

    def feed(self, data: bytes) -> list[bytes]:
        payloads: list[bytes] = []
        errors: list[bytes] = []
        try:
            self._buf.add_data(data)
            for message in self._buf:
                # botocore-stubs say `headers: int`; botocore sets the parsed header dict
                self._message(message.headers, message.payload, payloads, errors)  # type: ignore[arg-type]
        except ValueError:
            raise
        except Exception as exc:  # botocore's ParserError family: CRC mismatch, bad lengths, bad headers
            raise ValueError(f"invalid AWS event-stream frame: {type(exc).__name__}") from None
        out = self._events.feed_events(payloads) if payloads else []
        if errors and not self._done:
            self._done = True
            out.extend(errors)
        return out

    def _message(self, headers: dict[str, Any], payload: bytes, payloads: list[bytes], errors: list[bytes]) -> None:
        if self._done or errors:
            return
        kind = headers.get(":message-type")
        if kind != "event":
            name = str(headers.get(":exception-type") or headers.get(":error-code") or "error")
            text = str(headers.get(":error-message") or "")
            if kind == "exception":
                try:
                    text = _frame.decode(payload).message or text
                except msgspec.DecodeError:
                    pass
            errors.append(stream_error_payload(name, text))
            return
        if headers.get(":event-type") != "chunk":
            return  # no other event is defined for this operation
        try:
            frame = _frame.decode(payload)
            encoded = frame.chunk.bytes if frame.chunk is not None else frame.bytes or ""
            payloads.append(base64.b64decode(encoded, validate=True))
        except (msgspec.DecodeError, binascii.Error) as exc:
            raise ValueError(f"a chunk event has an unreadable payload ({exc})") from None

    def end(self) -> list[bytes]:
        return self._events.end()


def _refuse_image_urls(messages: list[dict[str, Any]]) -> None:
    """Bedrock hands Claude only inline images: a URL source would be refused upstream, after a
    signed round trip, so it is the client's 400 here."""
    for message in messages:
        for block in message["content"] if isinstance(message["content"], list) else ():
            if block.get("type") == "image" and block["source"].get("type") == "url":
                raise bad_request(
                    "AWS Bedrock does not fetch image URLs; send the image inline as a base64 data URL "
                    "(data:image/png;base64,...).",
                    param="messages",
                    code="unsupported_parameter",
                )


class BedrockAnthropicAdapter(AdapterBase):
    kind = BEDROCK.name

    def __init__(self, runtime: Runtime, version: str = BEDROCK_VERSION) -> None:
        self.name = runtime.provider
        self._runtime = runtime
        self._version = version

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest:
        body, dropped = build_body(parsed, upstream_model)
        _refuse_image_urls(body["messages"])
        del body["model"]  # the URL names the model (or inference profile)
        stream = body.pop("stream", False) is True  # the operation decides; Bedrock refuses the field
        body["anthropic_version"] = self._version
        if stream:
            return await self._runtime.request(
                upstream_model, "invoke-with-response-stream", _encode(body), STREAM_HEADERS, dropped
            )
        return await self._runtime.request(upstream_model, "invoke", _encode(body), JSON_HEADERS, dropped)

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest:
        raise bad_request(
            "Claude on Bedrock has no embeddings; route embeddings to a deployment that has them "
            "(a `bedrock` provider serves Titan and Cohere embeddings).",
            param="model",
            code="unsupported_capability",
        )

    def chat_response(self, body: bytes, upstream_model: str) -> bytes:
        return response.chat_response(body, upstream_model)

    def embeddings_response(self, body: bytes, upstream_model: str, headers: Mapping[str, str]) -> bytes:
        raise ValueError("Claude on Bedrock has no embeddings")

    def stream_decoder(self, upstream_model: str) -> InvokeStreamDecoder:
        return InvokeStreamDecoder(upstream_model)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified:
        return classify(status, headers, body)

    def client_error_body(self, status: int, body: bytes) -> bytes:
        return client_error_body(status, body)


def build(name: str, provider: Provider, stored_key: str | None = None) -> BedrockAnthropicAdapter:
    return BedrockAnthropicAdapter(
        runtime(name, provider, BEDROCK.endpoint(provider), stored_key), provider.api_version or BEDROCK_VERSION
    )
