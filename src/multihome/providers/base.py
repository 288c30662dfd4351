"""The small interface every provider adapter implements, and the outcome vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

from ..schema.chat import ParsedChat
from ..schema.embeddings import ParsedEmbeddings
from ..schema.peek import ResponsePeek

# Outcome kinds. The first two are declines: the next deployment may serve the call.
CAPACITY = "capacity"  # 429 / throttling
UNAVAILABLE = "unavailable"  # 5xx, timeout, connection error, broken stream before the first byte
REFUSAL = "refusal"  # content filter
CLIENT_ERROR = "client_error"  # the request itself is wrong; no other deployment will do better
OK = "ok"


class UpstreamRequest(msgspec.Struct):
    url: str
    headers: dict[str, str]
    body: bytes


class Classified(msgspec.Struct):
    """What an upstream error means for routing: kind, a short label, and Retry-After in seconds."""

    kind: str
    label: str
    retry_after: float | None = None


class Adapter(Protocol):
    kind: str

    async def auth_headers(self) -> dict[str, str]: ...

    def chat_request(self, parsed: ParsedChat, upstream_model: str, auth: dict[str, str]) -> UpstreamRequest: ...

    def embeddings_request(
        self, parsed: ParsedEmbeddings, upstream_model: str, auth: dict[str, str]
    ) -> UpstreamRequest: ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> Classified: ...

    def is_refusal(self, peek: ResponsePeek) -> bool: ...

    def skip_stream_chunk(self, peek: ResponsePeek) -> bool: ...

