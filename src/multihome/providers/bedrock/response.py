"""A Converse answer -> OpenAI chat.completion, and the stop-reason mapping `stream.py` shares."""

from __future__ import annotations

import msgspec

from ...schema.bounded import Decoder
from ..openai_out import (
    FINISH_FILTER,
    FINISH_LENGTH,
    FINISH_STOP,
    FINISH_TOOLS,
    Reasoning,
    ToolCallOut,
    UsageOut,
    completion,
)

STOP_REASONS = {
    "end_turn": FINISH_STOP,
    "stop_sequence": FINISH_STOP,
    "max_tokens": FINISH_LENGTH,
    "model_context_window_exceeded": FINISH_LENGTH,
    "tool_use": FINISH_TOOLS,
    "guardrail_intervened": FINISH_FILTER,
    "content_filtered": FINISH_FILTER,
}
# No OpenAI equivalent: the answer is unusable, so it counts as a broken upstream (fail over).
BROKEN_STOP_REASONS = frozenset({"malformed_model_output", "malformed_tool_use"})


def finish_reason(stop_reason: str | None) -> str:
    if stop_reason in BROKEN_STOP_REASONS:
        raise ValueError(f"Bedrock stopReason {stop_reason}: the model produced no usable answer")
    return STOP_REASONS.get(stop_reason or "end_turn", FINISH_STOP)


class _ToolUse(msgspec.Struct):
    toolUseId: str
    name: str
    input: msgspec.Raw = msgspec.Raw()


class ReasoningText(msgspec.Struct):
    text: str = ""
    signature: str | None = None


class ReasoningContent(msgspec.Struct):
    reasoningText: ReasoningText | None = None
    redactedContent: str | None = None  # base64 in JSON


def reasoning_block(rc: ReasoningContent) -> dict[str, str | None]:
    """Converse's reasoningContent as a `thinking_blocks` entry (docs/translation/reasoning.md)."""
    if rc.reasoningText is not None:
        return {"type": "thinking", "thinking": rc.reasoningText.text, "signature": rc.reasoningText.signature or ""}
    return {"type": "redacted_thinking", "data": rc.redactedContent}


class _Block(msgspec.Struct):
    text: str | None = None
    toolUse: _ToolUse | None = None
    reasoningContent: ReasoningContent | None = None


class _Message(msgspec.Struct):
    content: list[_Block] = []


class _Output(msgspec.Struct):
    message: _Message | None = None


class Usage(msgspec.Struct):
    inputTokens: int = 0
    outputTokens: int = 0
    cacheReadInputTokens: int = 0
    cacheWriteInputTokens: int = 0

    def to_out(self) -> UsageOut:
        # Bedrock's inputTokens leaves cache reads and writes out (as Anthropic's does); OpenAI's
        # prompt_tokens includes cached tokens, so they are added back in.
        prompt = self.inputTokens + self.cacheReadInputTokens + self.cacheWriteInputTokens
        return UsageOut(prompt, self.outputTokens, self.cacheReadInputTokens)


class _Converse(msgspec.Struct):
    output: _Output
    stopReason: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)


_converse = Decoder(_Converse)


def chat_completion(body: bytes, model: str) -> bytes:
    """A Converse response as an OpenAI chat.completion; ValueError when it cannot be read."""
    try:
        resp = _converse.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a Converse response: {exc}") from None
    texts: list[str] = []
    calls: list[ToolCallOut] = []
    reasoning = Reasoning()
    for block in resp.output.message.content if resp.output.message else ():
        if block.reasoningContent is not None:
            thought = reasoning_block(block.reasoningContent)
            reasoning.blocks.append(thought)
            if thought["type"] == "thinking":
                reasoning.text.append(thought["thinking"] or "")
        elif block.text is not None:
            texts.append(block.text)
        elif block.toolUse is not None:
            t = block.toolUse
            args = bytes(t.input).decode() if len(t.input) else "{}"
            calls.append(ToolCallOut(t.toolUseId, t.name, args))
    text = "".join(texts) if texts else None
    return completion(
        model,
        text=text,
        tool_calls=calls,
        finish_reason=finish_reason(resp.stopReason),
        usage=resp.usage.to_out(),
        reasoning=reasoning if reasoning.blocks else None,
    )
