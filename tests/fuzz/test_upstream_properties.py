"""Property tests of every parser of upstream answers: unary bodies, embeddings, error bodies and
headers, SSE streams (OpenAI, Anthropic, Gemini), Bedrock's binary event-stream, the relay that
checks and re-frames them, and the Anthropic front door's translation of the result.

A broken or hostile upstream must cost the client a clean failure (a failover, a 502, an error
event at the end of a stream), never a 500 or a cut connection: each stage raises only what its
caller handles (harness.upstream_stage), and the stages that run inside a stream never raise.
"""

from __future__ import annotations

import asyncio
import json
from typing import cast

from hypothesis import given
from hypothesis import strategies as st
from pyqwest import Response

from multihome.api.anthropic.stream import AnthropicStream
from multihome.api.anthropic.translate import to_anthropic
from multihome.api.openai.errors import upstream_client_error
from multihome.providers.errors import retry_after_seconds
from multihome.routing.attempts import Attempt, Served
from multihome.routing.stream_relay import StreamRelay
from multihome.schema.anthropic import parse_messages
from multihome.schema.embeddings import parse_embeddings
from multihome.schema.errors import ApiError
from multihome.schema.peek import peek_decoder
from multihome.simulators.bedrock.eventstream import frame

from .harness import FUZZ, upstream_stage
from .strategies import all_paths, encode, fragment_or_value, hostile_text, mutated, number
from .test_request_properties import ADAPTERS

BY_KIND = {a.kind: (a, m, e) for a, m, e in ADAPTERS}
PASS_THROUGH = ["openai", "azure"]
MESSAGES_REQUEST = parse_messages(
    b'{"model": "g", "max_tokens": 9, "stop_sequences": ["END"], "messages": [{"role": "user", "content": "hi"}]}'
).request

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "stop_reason": "END",
            "message": {
                "role": "assistant",
                "content": "hi",
                "refusal": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 1},
    },
}
UNARY = {
    "openai": COMPLETION,
    "azure": COMPLETION,
    "anthropic": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
        "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0},
    },
    "bedrock": {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": "hi"}, {"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
    },
    "gemini": {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "hi"}, {"functionCall": {"name": "f", "args": {"a": 1}}}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2},
        "responseId": "r",
    },
}
UNARY["vertex"] = UNARY["gemini"]
EMBEDDINGS = {  # model -> the upstream's answer around one vector
    "text-embedding-3-small": lambda v: {
        "object": "list",
        "model": "e",
        "data": [{"object": "embedding", "index": 0, "embedding": v}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    },
    "amazon.titan-embed-text-v2:0": lambda v: {"embedding": v, "inputTextTokenCount": 3},
    "cohere.embed-english-v3": lambda v: {"embeddings": [v], "texts": ["a"]},
    "text-embedding-004": lambda v: {"embeddings": [{"values": v}], "usageMetadata": {"promptTokenCount": 2}},
    "text-embedding-005": lambda v: {"predictions": [{"embeddings": {"values": v, "statistics": {"token_count": 3}}}]},
}
EMBEDDINGS["embed-dep"] = EMBEDDINGS["text-embedding-3-small"]
ERROR_BODIES = [
    {"error": {"message": "bad", "type": "invalid_request_error", "param": "x", "code": "context_length_exceeded"}},
    {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}},
    {"message": "Input is too long", "__type": "ValidationException"},
    {
        "error": {
            "code": 400,
            "message": "too long",
            "status": "INVALID_ARGUMENT",
            "details": [{"reason": "API_KEY_INVALID", "retryDelay": "2s"}],
        }
    },
]

OPENAI_STREAM = [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
    },
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "content": "hi",
                    "tool_calls": [
                        {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
                    ],
                },
                "finish_reason": None,
            }
        ],
    },
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}],
    },
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    },
]
ANTHROPIC_STREAM = [
    (
        "message_start",
        {"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 3}}},
    ),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}},
    ),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
    ("message_stop", {"type": "message_stop"}),
]
GEMINI_STREAM = [
    UNARY["gemini"],
    {
        "candidates": [{"content": {"parts": [{"text": " more"}]}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 9},
    },
]
BEDROCK_STREAM = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}),
    ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a": 1}'}}}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2}}),
]


class _Deployment:
    def __init__(self, adapter) -> None:
        self.adapter, self.name, self.provider = adapter, "dep", adapter.kind


class _Response:
    """Stands in for the upstream response a StreamRelay reads; these tests feed _process directly, so
    its body reader is never read (nor the call closed)."""

    content = None


def _unary(kind: str, body: bytes) -> None:
    adapter, model, _ = BY_KIND[kind]

    def translate():
        out = adapter.chat_response(body, model)
        peek_decoder.decode(out)  # as routing/attempts.py reads every answer
        return out

    out = upstream_stage(f"{kind}.chat_response", translate, body)
    if out is not None:
        upstream_stage("to_anthropic", to_anthropic, out, out, MESSAGES_REQUEST, "dep", allowed=(ApiError,))


def _sse(events) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


def _named_sse(events) -> bytes:
    return b"".join(b"event: " + name.encode() + b"\ndata: " + e + b"\n\n" for name, e in events)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def _relay(kind: str, data: bytes, cuts: list[int]) -> None:
    """Upstream stream bytes through the relay and on through the Anthropic door's converter."""
    adapter, model, _ = BY_KIND[kind]
    relay = StreamRelay(cast(Response, _Response()), adapter, model, "dep", forward_usage=True)
    door = AnthropicStream(MESSAGES_REQUEST)
    for piece in [*_chunks(data, cuts), b""]:  # b"": upstream EOF
        out = upstream_stage(f"{kind} relay", relay._process, data, piece, allowed=())
        upstream_stage("anthropic door stream", door.feed, data, out, allowed=())
        if relay.error or relay.done:
            break
    upstream_stage("anthropic door stream end", door.end, data, allowed=())


def _payload(template: dict) -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(encode(template)), mutated(template, all_paths(template)), fragment_or_value())


cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=6)


@FUZZ
@given(st.sampled_from(sorted(UNARY)), st.data())
def test_unary_answers_translate_or_count_as_malformed(kind, data):
    body = data.draw(st.one_of(_payload(UNARY[kind]), st.binary(max_size=100)))
    _unary(kind, body)


@FUZZ
@given(st.sampled_from(sorted(EMBEDDINGS)), st.sampled_from(["float", "base64"]), st.data())
def test_embeddings_answers_translate_or_count_as_malformed(model, encoding, data):
    vector = data.draw(st.lists(number, max_size=4))
    body = data.draw(st.one_of(st.just(encode(EMBEDDINGS[model](vector))), _payload(EMBEDDINGS[model]([0.1, 3e38]))))
    request = parse_embeddings(json.dumps({"model": "g", "input": "a", "encoding_format": encoding}).encode())
    headers = {"x-amzn-bedrock-input-token-count": data.draw(st.sampled_from(["3", "-1", "9" * 40, "x"]))}
    for adapter, _, models in ADAPTERS:
        if model in models:

            async def call():
                # In one task, as the attempt loop does: building the request is what tells the
                # translator the client's encoding_format (a context variable).
                await adapter.embeddings_request(request, model)
                stage = f"{adapter.kind}.embeddings_response"
                return upstream_stage(stage, adapter.embeddings_response, body, body, model, headers)

            asyncio.run(call())


@FUZZ
@given(st.sampled_from(sorted(BY_KIND)), st.integers(min_value=400, max_value=599), st.data())
def test_error_answers_are_classified_and_reshaped_without_raising(kind, status, data):
    adapter, _, _ = BY_KIND[kind]
    body = data.draw(st.one_of(*(_payload(b) for b in ERROR_BODIES), st.binary(max_size=60)))
    headers = data.draw(
        st.dictionaries(
            st.sampled_from(
                ["retry-after", "retry-after-ms", "x-ms-retry-after-ms", "x-amzn-ErrorType", "x-amzn-errortype"]
            ),
            st.one_of(
                hostile_text,
                st.sampled_from(
                    [
                        "1e400",
                        "nan",
                        "-5",
                        "inf",
                        "Wed, 21 Oct 2015 07:28:00 GMT",
                        "Mon, 01 Jan 9999 00:00:00 +2359",
                        "Sun, 00 Jan 0000 00:00:00 GMT",
                    ]
                ),
            ),
            max_size=3,
        )
    )
    upstream_stage("retry_after_seconds", retry_after_seconds, body, headers, allowed=())
    upstream_stage(f"{kind}.classify_error", adapter.classify_error, body, status, headers, body, allowed=())
    served = Served(_Deployment(adapter), status, [Attempt("dep", f"http_{status}", 1.0)], body)
    err = upstream_stage("upstream_client_error", upstream_client_error, body, served, allowed=())
    assert isinstance(err, ApiError) and err.to_bytes()


@FUZZ
@given(st.sampled_from(PASS_THROUGH), st.lists(st.sampled_from(range(len(OPENAI_STREAM))), max_size=6), cuts, st.data())
def test_openai_streams_relay_or_end_with_an_error_event(kind, order, cut, data):
    events = [data.draw(_payload(OPENAI_STREAM[i])) for i in order]
    tail = data.draw(st.sampled_from([b"data: [DONE]\n\n", b"", b"data: [DONE]", b": ping\r\n\r\n", b"data:\n\n"]))
    _relay(kind, _sse(events) + tail, cut)


@FUZZ
@given(st.lists(st.sampled_from(range(len(ANTHROPIC_STREAM))), max_size=8), cuts, st.data())
def test_anthropic_streams_relay_or_end_with_an_error_event(order, cut, data):
    events = [(ANTHROPIC_STREAM[i][0], data.draw(_payload(ANTHROPIC_STREAM[i][1]))) for i in order]
    _relay("anthropic", _named_sse(events), cut)


@FUZZ
@given(
    st.sampled_from(["gemini", "vertex"]),
    st.lists(st.sampled_from(range(len(GEMINI_STREAM))), max_size=4),
    cuts,
    st.data(),
)
def test_gemini_streams_relay_or_end_with_an_error_event(kind, order, cut, data):
    _relay(kind, _sse([data.draw(_payload(GEMINI_STREAM[i])) for i in order]), cut)


@FUZZ
@given(st.lists(st.sampled_from(range(len(BEDROCK_STREAM))), max_size=8), cuts, st.data())
def test_bedrock_event_streams_relay_or_end_with_an_error_event(order, cut, data):
    frames = []
    for i in order:
        name, payload = BEDROCK_STREAM[i]
        kind = data.draw(st.sampled_from(["event", "event", "event", "exception", "error", ""]))
        headers = [
            (":event-type", data.draw(st.one_of(st.just(name), hostile_text.filter(lambda t: len(t.encode()) < 200)))),
            (":message-type", kind),
            (":exception-type", "ThrottlingException"),
        ]
        frames.append(frame(headers, data.draw(_payload(payload)), corrupt=data.draw(st.booleans()) and i == 0))
    garbage = data.draw(st.sampled_from([b"", b"\x00\x00\x00\x10\x00\x00\x00\x00", b"\xff" * 16]))
    _relay("bedrock", b"".join(frames) + garbage, cut)
