"""Anthropic Messages API request (`POST /v1/messages`), decoded once into typed structs.

One flat block struct covers every content-block type so that an unsupported type gets a
sentence naming it (a tagged union would only say "invalid tag"). Unknown fields are ignored
by msgspec; the front door reports unknown top-level fields as dropped.
"""

from __future__ import annotations

import msgspec

from .bounds import MAX_TOOLS_OTHER, too_many
from .decoding import Counted, count_items, decode_views
from .errors import bad_request

# Top-level fields the front door maps (or deliberately drops and reports); anything else is reported as dropped.
KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "output_config",
        "multihome",  # the gateway's own routing extension, passed to the canonical request
    }
)


class ImageSource(msgspec.Struct):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class Block(msgspec.Struct):
    """Any content block: text, image, tool_use, tool_result, thinking, document, ..."""

    type: str
    text: str | None = None
    source: ImageSource | None = None
    id: str | None = None  # tool_use
    name: str | None = None  # tool_use
    input: msgspec.Raw = msgspec.Raw()  # tool_use; empty when absent (Raw cannot sit in a union)
    tool_use_id: str | None = None  # tool_result
    content: str | list[Block] | None = None  # tool_result
    is_error: bool | None = None  # tool_result
    cache_control: msgspec.Raw = msgspec.Raw()
    thinking: str | None = None  # thinking
    signature: str | None = None  # thinking
    data: str | None = None  # redacted_thinking


class InputMessage(msgspec.Struct):
    role: str
    content: str | list[Block]


class ToolDef(msgspec.Struct):
    name: str
    input_schema: msgspec.Raw = msgspec.Raw()
    description: str | None = None
    type: str | None = None  # absent or "custom" for client tools; anything else is a server tool
    cache_control: msgspec.Raw = msgspec.Raw()


class ToolChoice(msgspec.Struct):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(msgspec.Struct):
    user_id: str | None = None


class Thinking(msgspec.Struct):
    type: str
    budget_tokens: int | None = None
    display: str | None = None  # adaptive thinking's `summarized` / `omitted`


class OutputFormat(msgspec.Struct):
    type: str
    schema: msgspec.Raw = msgspec.Raw()


class OutputConfig(msgspec.Struct):
    format: OutputFormat | None = None
    effort: str | None = None


class MessagesRequest(msgspec.Struct):
    model: str
    messages: list[InputMessage]
    max_tokens: int | None = None  # required by Anthropic; checked explicitly for a clear 400
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool | None = None
    metadata: Metadata | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    service_tier: str | None = None
    output_config: OutputConfig | None = None


class ParsedMessages(msgspec.Struct):
    request: MessagesRequest
    unknown: list[str]  # top-level fields this gateway does not model
    multihome: msgspec.Raw | None = None  # the gateway extension (`{"route": {"deployments": [...]}}`), as sent


# Content blocks, a tool_result's blocks (at any depth) and the system prompt's: what translation walks.
_typed = count_items(
    msgspec.json.Decoder(MessagesRequest),
    Counted("messages", ("content",), ("content",), ("system",), max_tools=MAX_TOOLS_OTHER, noun="content blocks"),
)


def parse_messages(body: bytes, *, counting: bool = False) -> ParsedMessages:
    """Decode and check the shape; raises ApiError (400) naming the field. `counting`: a
    `/v1/messages/count_tokens` body, which has no `max_tokens`."""
    top, req = decode_views(body, _typed)
    if req.max_tokens is None and not counting:
        raise bad_request(
            "max_tokens: Field required. Set the maximum number of tokens to generate.", param="max_tokens"
        )
    if req.tools is not None and len(req.tools) > MAX_TOOLS_OTHER:
        raise too_many("tools", len(req.tools), MAX_TOOLS_OTHER)
    unknown = sorted(k for k in top if k not in KNOWN_FIELDS)
    if req.metadata is not None:  # metadata holds user_id only; another key is dropped, and said so
        unknown += sorted(f"metadata.{k}" for k in _metadata_keys.decode(top["metadata"]) if k != "user_id")
    return ParsedMessages(request=req, unknown=unknown, multihome=top.get("multihome"))


_metadata_keys = msgspec.json.Decoder(dict[str, msgspec.Raw])  # its keys, values left unread
