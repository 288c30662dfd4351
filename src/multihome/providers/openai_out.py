"""Build OpenAI-shaped answers from a translating adapter's parts: one place for the schema.

Translating adapters (Bedrock, Anthropic, Gemini) decode their upstream into these calls, so
every provider's answer reaches the client in exactly the same shape.
"""

from __future__ import annotations

import base64
import os
import struct
import time
from typing import Any

import msgspec

from ..schema.peek import CompletionDetails, PromptDetails, Usage

_encode = msgspec.json.encode

# The `service_tier` every translated answer reports: the tier its upstream processed it at. A translating
# adapter sends no tier (the upstream's standard one), which OpenAI's answers call `default`
# (providers/kind.py `service_tier`; docs/metering.md "Service tiers").
STANDARD_TIER = "default"

# Provider stop reasons -> OpenAI finish_reason.
FINISH_STOP, FINISH_LENGTH, FINISH_TOOLS, FINISH_FILTER = "stop", "length", "tool_calls", "content_filter"


def embedding_base64(vector: list[float]) -> str:
    """An embedding in OpenAI's `encoding_format: base64` form: little-endian float32.

    A value outside float32's range cannot be a real embedding: the answer is malformed
    (ValueError, which routing treats as a failed attempt), not a gateway crash.
    """
    try:
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    except (OverflowError, struct.error) as exc:
        raise ValueError(f"an embedding value does not fit float32 ({exc})") from None


def completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


class ToolCallOut(msgspec.Struct):
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    signature: str | None = None  # Gemini's thoughtSignature of the call (sent as extra_content.google)


def _extra(signature: str | None) -> dict[str, Any]:
    """A tool call's `extra_content`, Google's OpenAI-compatible name for a call's thought signature."""
    return {"extra_content": {"google": {"thought_signature": signature}}} if signature else {}


class UsageOut(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning included, as OpenAI counts it
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # the reasoning part of completion_tokens, when the upstream reports it apart

    def counted(self) -> Usage:
        """As the gateway reads usage from a chunk (schema/peek.py): what a stream decoder tells of its start."""
        done = CompletionDetails(self.reasoning_tokens) if self.reasoning_tokens else None
        total = self.prompt_tokens + self.completion_tokens
        return Usage(self.prompt_tokens, self.completion_tokens, total, PromptDetails(self.cached_tokens), done)

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out


def completion(
    model: str,
    *,
    text: str | None,
    tool_calls: list[ToolCallOut] | None,
    finish_reason: str,
    usage: UsageOut,
    refusal: str | None = None,
    id: str | None = None,
    reasoning: Reasoning | None = None,
    matched: str | None = None,
) -> bytes:
    """`matched`: the stop sequence that ended the answer, when the upstream says which (as vLLM does)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": refusal}
    if reasoning is not None:
        message.update(reasoning.fields())
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
                **_extra(c.signature),
            }
            for c in tool_calls
        ]
    return _encode(
        {
            "id": id or completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason, **_matched(matched)}
            ],
            "usage": usage.to_openai(),
            "service_tier": STANDARD_TIER,
        }
    )


def _matched(sequence: str | None) -> dict[str, str]:
    """vLLM's `choices[].stop_reason`, the stop string that matched: the one OpenAI-shaped name for what
    Anthropic calls `stop_sequence` (the Anthropic door answers it: api/anthropic/translate.py stop_reason)."""
    return {"stop_reason": sequence} if sequence is not None else {}


class Reasoning(msgspec.Struct):
    """What an upstream reasoned, in the two message fields OpenAI chat has no standard for:
    `reasoning_content` (the text, the name DeepSeek, vLLM and others use) and `thinking_blocks`
    (Anthropic's blocks with their signatures, to be sent back unchanged on the next turn).
    docs/translation/reasoning.md."""

    text: list[str] = msgspec.field(default_factory=list)
    blocks: list[dict[str, Any]] = msgspec.field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.text:
            out["reasoning_content"] = "".join(self.text)
        if self.blocks:
            out["thinking_blocks"] = self.blocks
        return out


class ChunkWriter:
    """OpenAI `chat.completion.chunk` payloads (without SSE framing) for one streamed answer."""

    def __init__(self, model: str, id: str | None = None) -> None:
        self._head = {
            "id": id or completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": STANDARD_TIER,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return _encode(
            {**self._head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        )

    def role(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, delta: str) -> bytes:
        return self._chunk({"content": delta})

    def reasoning(self, delta: str) -> bytes:
        return self._chunk({"reasoning_content": delta})

    def thinking_block(self, block: dict[str, Any]) -> bytes:
        """A finished thinking block, signature included, once it is complete (docs/translation/reasoning.md)."""
        return self._chunk({"thinking_blocks": [block]})

    def refusal(self, delta: str) -> bytes:
        return self._chunk({"refusal": delta})

    def tool_start(self, index: int, call_id: str, name: str, signature: str | None = None) -> bytes:
        call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        return self._chunk({"tool_calls": [{**call, **_extra(signature)}]})

    def tool_args(self, index: int, fragment: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def finish(self, reason: str, matched: str | None = None) -> bytes:
        """The last chunk with choices; `matched`: the stop sequence that ended the answer, when known."""
        if matched is None:
            return self._chunk({}, reason)
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason, "stop_reason": matched}
        return _encode({**self._head, "choices": [choice]})

    def usage(self, usage: UsageOut) -> bytes:
        """The final usage chunk: empty choices. The relay forwards it only to clients that asked."""
        return _encode({**self._head, "choices": [], "usage": usage.to_openai()})
