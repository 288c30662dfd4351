"""Anthropic Message -> OpenAI chat.completion, plus the stop-reason and usage rules both the
unary and the streaming paths use."""

from __future__ import annotations

import msgspec

from ...schema.bounded import Decoder
from .. import openai_out
from ..openai_out import FINISH_FILTER, FINISH_LENGTH, FINISH_STOP, FINISH_TOOLS, Reasoning, ToolCallOut, UsageOut
from .request import JSON_TOOL

# protocols.md section 9. pause_turn only follows Anthropic server tools, which this adapter never
# sends, so it reads as a normal stop.
FINISH = {
    "end_turn": FINISH_STOP,
    "stop_sequence": FINISH_STOP,
    "pause_turn": FINISH_STOP,
    "max_tokens": FINISH_LENGTH,
    "model_context_window_exceeded": FINISH_LENGTH,
    "tool_use": FINISH_TOOLS,
    "refusal": FINISH_FILTER,
}


def finish_reason(stop_reason: str | None) -> str:
    return FINISH.get(stop_reason or "", FINISH_STOP)


class OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    # Where Anthropic reports it: the thinking part of output_tokens (already inside it).
    output_tokens_details: OutputDetails | None = None

    @property
    def thinking_tokens(self) -> int | None:
        details = self.output_tokens_details
        return details.thinking_tokens if details is not None else None


def usage_out(
    input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int, thinking: int = 0
) -> UsageOut:
    # Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens includes them.
    # Its output_tokens already counts thinking: `thinking` only names that part (never added).
    return UsageOut(
        prompt_tokens=input_tokens + cache_read + cache_creation,
        completion_tokens=output_tokens,
        cached_tokens=cache_read,
        reasoning_tokens=max(min(thinking, output_tokens), 0),
    )


class Block(msgspec.Struct):
    type: str
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None  # redacted_thinking
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)


class Message(msgspec.Struct):
    id: str = ""
    model: str | None = None
    content: list[Block] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)


_message = Decoder(Message)


def chat_response(body: bytes, upstream_model: str) -> bytes:
    """A 2xx Anthropic body as an OpenAI chat.completion (raises on anything else)."""
    msg = _message.decode(body)
    texts: list[str] = []
    calls: list[ToolCallOut] = []
    reasoning = Reasoning()
    finish = finish_reason(msg.stop_reason)
    for block in msg.content:
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use":
            args = bytes(msg_input(block)).decode()
            if block.name == JSON_TOOL:
                # JSON mode: the forced tool's input is the answer.
                texts.append(args)
                finish = FINISH_STOP
            else:
                calls.append(ToolCallOut(id=block.id or "", name=block.name or "", arguments=args))
        elif block.type == "thinking":
            reasoning.text.append(block.thinking or "")
            reasoning.blocks.append(
                {"type": "thinking", "thinking": block.thinking or "", "signature": block.signature}
            )
        elif block.type == "redacted_thinking":
            reasoning.blocks.append({"type": "redacted_thinking", "data": block.data})
        # server-tool blocks have no OpenAI chat field: not forwarded.
    u = msg.usage
    usage = usage_out(
        u.input_tokens or 0,
        u.output_tokens or 0,
        u.cache_read_input_tokens or 0,
        u.cache_creation_input_tokens or 0,
        u.thinking_tokens or 0,
    )
    return openai_out.completion(
        msg.model or upstream_model,
        text="".join(texts) if texts else None,
        tool_calls=calls or None,
        finish_reason=finish,
        usage=usage,
        id=completion_id(msg.id),
        reasoning=reasoning if reasoning.blocks else None,
        matched=msg.stop_sequence if finish == FINISH_STOP else None,
    )


def msg_input(block: Block) -> msgspec.Raw | bytes:
    return block.input if len(block.input) else b"{}"


def completion_id(message_id: str) -> str | None:
    # Keep Anthropic's id visible (support tickets quote it) in OpenAI's id format.
    return "chatcmpl-" + message_id if message_id else None
