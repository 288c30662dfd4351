"""The small interface every provider adapter implements, and the outcome vocabulary.

Clients speak OpenAI's chat schema. A pass-through adapter (OpenAI, Azure) forwards bytes; a
translating adapter (Bedrock, Anthropic, Gemini) builds its own upstream body and turns the
upstream answer back into OpenAI JSON, and its stream into OpenAI chunk payloads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import msgspec

from ..schema.chat import ParsedChat
from ..schema.embeddings import ParsedEmbeddings
from ..schema.peek import ResponsePeek

# Outcome kinds. All but CLIENT_ERROR are declines: the next deployment may serve the call,
# if the model group's `fail_over_on` lists the kind.
CAPACITY = "capacity"  # 429 / throttling
UNAVAILABLE = "unavailable"  # 5xx, timeout, connection error, broken stream before the first byte
REFUSAL = "refusal"  # content filter
UNSUPPORTED = "unsupported"  # this deployment rejects a parameter another one may accept
CONTEXT_OVERFLOW = "context_overflow"  # the prompt does not fit; a larger window may take it
CLIENT_ERROR = "client_error"  # the request itself is wrong; no other deployment will do better
OK = "ok"

# Attempt labels with a meaning beyond the HTTP status.
CONTEXT_OVERFLOW_LABEL = "context_overflow"
CREDENTIALS_REJECTED = "credentials_rejected"  # the gateway's own provider credentials, whatever the status


class StreamDecoder(Protocol):
    """Upstream stream bytes in; OpenAI `chat.completion.chunk` JSON payloads (or b"[DONE]") out.

    `feed` raises ValueError on a corrupt frame; `end` is called at upstream EOF and returns any
    final payloads (a protocol without a [DONE] sentinel emits it here).
    """

    def feed(self, data: bytes) -> list[bytes]: ...

    def end(self) -> list[bytes]: ...


class UpstreamRequest(msgspec.Struct):
    url: str
    headers: dict[str, str]
    body: bytes
    # Request parameters the provider cannot honour and the adapter dropped (reported to the client).
    dropped: list[str] = []
    # How the answer's stream is read when it is not the adapter's chat stream (a native Responses call).
    stream_decoder: StreamDecoder | None = None
    # A unary call the upstream takes only in pieces (Vertex gemini-embedding-001 takes one instance per
    # `:predict`): when set, `body` is unused; each of these bodies is posted to `url` (concurrently,
    # bounded) and `join` makes one upstream-shaped answer of the 2xx bodies, in this order.
    fan_out: list[bytes] = []
    join: Callable[[list[bytes]], bytes] | None = None


class Classified(msgspec.Struct):
    """What an upstream error means for routing: kind, a short label, and Retry-After in seconds."""

    kind: str
    label: str
    retry_after: float | None = None


class Adapter(Protocol):
    kind: str

    async def chat_request(self, parsed: ParsedChat, upstream_model: str) -> UpstreamRequest: ...

    async def embeddings_request(self, parsed: ParsedEmbeddings, upstream_model: str) -> UpstreamRequest: ...

    def chat_response(self, body: bytes, upstream_model: str) -> bytes:
        """A 2xx upstream body as an OpenAI chat.completion JSON body."""
        ...

    def embeddings_response(self, body: bytes, upstream_model: str, headers: Mapping[str, str]) -> bytes:
        """A 2xx upstream body as an OpenAI embeddings JSON body; `headers` are the upstream response's
        (Bedrock InvokeModel reports some models' token counts only there)."""
        ...

    def stream_decoder(self, upstream_model: str) -> StreamDecoder: ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified: ...

    def client_error_body(self, status: int, body: bytes) -> bytes:
        """An upstream 4xx body, re-shaped into OpenAI's error envelope (pass-through: unchanged)."""
        ...

    def is_refusal(self, peek: ResponsePeek) -> bool: ...

    def skip_stream_chunk(self, peek: ResponsePeek) -> bool: ...

    async def close(self) -> None: ...


class NativeResponses(Protocol):
    """An adapter whose upstream also serves the Responses API (`POST /responses`): the Responses door
    sends it the whole context natively (`store: false`) instead of translating it to a chat call."""

    def responses_request(self, raw: dict[str, msgspec.Raw], upstream_model: str) -> Awaitable[UpstreamRequest]:
        """`raw`: the Responses request body's fields, ready to send but for `model`."""
        ...


def native_responses(adapter: object) -> NativeResponses | None:
    """The adapter as a native Responses upstream, or None when its upstream API has no Responses API."""
    return adapter if hasattr(adapter, "responses_request") else None


class AdapterBase:
    """Defaults every adapter shares: refusals are `finish_reason: content_filter`, every stream
    chunk is forwarded, error bodies are already OpenAI-shaped, nothing to close."""

    def is_refusal(self, peek: ResponsePeek) -> bool:
        for c in peek.choices:
            if c.finish_reason == "content_filter":
                return True
        return False

    def skip_stream_chunk(self, peek: ResponsePeek) -> bool:
        return False

    def client_error_body(self, status: int, body: bytes) -> bytes:
        return body

    async def close(self) -> None:
        return None
