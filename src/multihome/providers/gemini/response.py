"""Gemini `GenerateContentResponse` -> OpenAI chat completion; embeddings answers -> vectors.

The structs and helpers here are shared with `stream.py`, which reads the same chunks one SSE
event at a time.
"""

from __future__ import annotations

import os

import msgspec

from ...schema.bounded import Decoder
from .. import openai_out as out

# finishReason -> OpenAI finish_reason. STOP becomes tool_calls when function calls came back.
_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
# The model produced a function call Gemini itself could not use: no OpenAI equivalent, so the
# answer is treated as a failed attempt (the next deployment may do better).
_BROKEN = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})


class FunctionCall(msgspec.Struct):
    name: str
    args: msgspec.Raw = msgspec.Raw()  # empty when absent
    id: str | None = None


class Part(msgspec.Struct):
    text: str | None = None
    thought: bool | None = None  # a thought summary (with includeThoughts): reasoning, not the answer
    thoughtSignature: str | None = None  # on a functionCall part: to be sent back with the call
    functionCall: FunctionCall | None = None


class Content(msgspec.Struct):
    parts: list[Part] = []
    role: str | None = None


class Candidate(msgspec.Struct):
    content: Content | None = None
    finishReason: str | None = None
    index: int = 0


class PromptFeedback(msgspec.Struct):
    blockReason: str | None = None
    blockReasonMessage: str | None = None


class UsageMetadata(msgspec.Struct):
    promptTokenCount: int = 0
    candidatesTokenCount: int = 0
    cachedContentTokenCount: int = 0
    thoughtsTokenCount: int = 0
    toolUsePromptTokenCount: int = 0


class GoogleError(msgspec.Struct):
    code: int | None = None
    message: str | None = None
    status: str | None = None


class GenerateContentResponse(msgspec.Struct):
    candidates: list[Candidate] = []
    promptFeedback: PromptFeedback | None = None
    usageMetadata: UsageMetadata | None = None
    responseId: str | None = None
    error: GoogleError | None = None


_decoder = Decoder(GenerateContentResponse)


def decode(body: bytes) -> GenerateContentResponse:
    """Raises ValueError (msgspec.DecodeError is one) on a body that is not a response."""
    resp: GenerateContentResponse = _decoder.decode(body)  # bounded.Decoder's decode is untyped
    return resp


def usage_of(meta: UsageMetadata | None) -> out.UsageOut:
    if meta is None:
        return out.UsageOut()
    # OpenAI's completion_tokens include reasoning; Gemini reports thoughts apart from candidatesTokenCount
    # and bills both as output: added here (else the call is under-billed), and named as reasoning_tokens.
    return out.UsageOut(
        prompt_tokens=meta.promptTokenCount + meta.toolUsePromptTokenCount,
        completion_tokens=meta.candidatesTokenCount + meta.thoughtsTokenCount,
        cached_tokens=meta.cachedContentTokenCount,
        reasoning_tokens=meta.thoughtsTokenCount,
    )


def finish_reason(reason: str | None, has_calls: bool) -> str:
    if reason in _BROKEN:
        raise ValueError(f"Gemini finished with {reason}")
    if reason == "MAX_TOKENS":
        return out.FINISH_LENGTH
    if reason in _FILTERED:
        return out.FINISH_FILTER
    return out.FINISH_TOOLS if has_calls else out.FINISH_STOP


def block_message(feedback: PromptFeedback) -> str:
    detail = f" ({feedback.blockReasonMessage})" if feedback.blockReasonMessage else ""
    return f"The prompt was blocked by the provider's safety filters: {feedback.blockReason}{detail}."


class CallIds:
    """OpenAI needs an id per tool call; Gemini may omit them. Its own id is kept when it sends one."""

    def __init__(self, response_id: str | None = None) -> None:
        self._base = "call_" + (response_id or os.urandom(9).hex())[:18]

    def id_for(self, call: FunctionCall, candidate: int, index: int) -> str:
        return call.id or f"{self._base}_{candidate}_{index}"


def args_text(call: FunctionCall) -> str:
    return bytes(call.args).decode() if len(call.args) else "{}"


def chat_completion(body: bytes, model: str) -> bytes:
    resp = decode(body)
    if resp.error is not None:
        raise ValueError(f"error in a 2xx body: {resp.error.status}")
    usage = usage_of(resp.usageMetadata)
    if not resp.candidates:
        feedback = resp.promptFeedback
        if feedback is None or not feedback.blockReason:
            raise ValueError("no candidates and no blockReason")
        return out.completion(
            model,
            text=None,
            tool_calls=None,
            finish_reason=out.FINISH_FILTER,
            usage=usage,
            refusal=block_message(feedback),
        )
    ids = CallIds(resp.responseId)
    choices: list[tuple[str | None, list[out.ToolCallOut] | None, str, str | None, out.Reasoning | None]] = []
    for cand in sorted(resp.candidates, key=lambda c: c.index):
        texts: list[str] = []
        found: list[out.ToolCallOut] = []
        thoughts = out.Reasoning()
        for part in cand.content.parts if cand.content else ():
            if part.functionCall is not None:
                fc = part.functionCall
                call_id = ids.id_for(fc, cand.index, len(found))
                found.append(out.ToolCallOut(call_id, fc.name, args_text(fc), part.thoughtSignature))
            elif part.text is not None and part.thought:
                thoughts.text.append(part.text)
            elif part.text is not None:
                texts.append(part.text)
        reason = finish_reason(cand.finishReason, bool(found))
        text = "".join(texts) or None
        refusal = None
        if reason == out.FINISH_FILTER and text is None and not found:
            refusal = f"The answer was blocked by the provider's safety filters: {cand.finishReason}."
        choices.append((text, found or None, reason, refusal, thoughts if thoughts.text else None))
    if len(choices) == 1:
        text, calls, reason, refusal, thought = choices[0]
        return out.completion(
            model, text=text, tool_calls=calls, finish_reason=reason, usage=usage, refusal=refusal, reasoning=thought
        )
    # n > 1: openai_out builds one choice; the others are built the same way and gathered.
    completion_id = out.completion_id()
    merged = None
    for i, (text, calls, reason, refusal, thought) in enumerate(choices):
        one = msgspec.json.decode(
            out.completion(
                model,
                text=text,
                tool_calls=calls,
                finish_reason=reason,
                usage=usage,
                refusal=refusal,
                id=completion_id,
                reasoning=thought,
            )
        )
        one["choices"][0]["index"] = i
        if merged is None:
            merged = one
        else:
            merged["choices"].append(one["choices"][0])
    return msgspec.json.encode(merged)


# -- embeddings ----------------------------------------------------------------------------


class _Values(msgspec.Struct):
    values: list[float]


class _BatchEmbed(msgspec.Struct):
    embeddings: list[_Values]
    usageMetadata: UsageMetadata | None = None


class _Statistics(msgspec.Struct):
    token_count: float = 0


class _VertexEmbedding(msgspec.Struct):
    values: list[float]
    statistics: _Statistics | None = None


class _Prediction(msgspec.Struct):
    embeddings: _VertexEmbedding


class _Predict(msgspec.Struct):
    predictions: list[_Prediction]


class _RawPredict(msgspec.Struct):
    predictions: list[msgspec.Raw]


_batch = Decoder(_BatchEmbed)
_predict = Decoder(_Predict)
_raw_predict = Decoder(_RawPredict)


def join_predictions(bodies: list[bytes]) -> bytes:
    """One `:predict` answer of the answers to one-instance calls, predictions in call order (for a
    model that takes one instance per request). Raises msgspec.DecodeError on a malformed body."""
    preds = [p for body in bodies for p in _raw_predict.decode(body).predictions]
    return msgspec.json.encode({"predictions": preds})


def embedding_vectors(body: bytes, *, vertex: bool) -> tuple[list[list[float]], int]:
    """(vectors in input order, prompt tokens). Gemini API batches report no token count: 0."""
    if vertex:
        resp = _predict.decode(body)
        tokens = sum(int(p.embeddings.statistics.token_count) for p in resp.predictions if p.embeddings.statistics)
        return [p.embeddings.values for p in resp.predictions], tokens
    batch = _batch.decode(body)
    tokens = batch.usageMetadata.promptTokenCount if batch.usageMetadata else 0
    return [e.values for e in batch.embeddings], tokens
