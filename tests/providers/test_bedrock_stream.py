"""ConverseStream event-stream -> OpenAI chunks: text, tool calls across deltas, usage, errors."""

from __future__ import annotations

import json

import pytest

from multihome.providers.bedrock.stream import ConverseStreamDecoder
from multihome.simulators.bedrock import eventstream as es


def decode(frames: list[bytes], *, split: int | None = None) -> list:
    """Feed the frames (optionally re-cut into `split`-byte pieces) and return decoded payloads."""
    data = b"".join(frames)
    d = ConverseStreamDecoder("claude")
    out = []
    pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else [data]
    for p in pieces:
        out.extend(d.feed(p))
    out.extend(d.end())
    return [p if p == b"[DONE]" else json.loads(p) for p in out]


TOOL_STREAM = [
    es.event("messageStart", {"role": "assistant"}),
    es.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me check."}, "p": "abc"}),
    es.event("contentBlockStop", {"contentBlockIndex": 0}),
    es.event(
        "contentBlockStart",
        {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_a", "name": "weather"}}},
    ),
    es.event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"ci'}}}),
    es.event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 'ty":"Oslo"}'}}}),
    es.event("contentBlockStop", {"contentBlockIndex": 1}),
    es.event(
        "contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_b", "name": "time"}}}
    ),
    es.event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{}"}}}),
    es.event("contentBlockStop", {"contentBlockIndex": 2}),
    es.event("messageStop", {"stopReason": "tool_use"}),
    es.event(
        "metadata",
        {
            "usage": {"inputTokens": 20, "outputTokens": 9, "totalTokens": 31, "cacheReadInputTokens": 2},
            "metrics": {"latencyMs": 5},
        },
    ),
]


@pytest.mark.parametrize("split", [None, 1, 7, 64])
def test_tool_calls_across_deltas_get_openai_indices(split):
    out = decode(TOOL_STREAM, split=split)
    assert out[-1] == b"[DONE]"
    chunks = out[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Let me check."}
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,
        "id": "tooluse_a",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    assert [c["index"] for c in calls] == [0, 0, 0, 1, 1]
    args = {0: "", 1: ""}
    for c in calls:
        args[c["index"]] += c["function"]["arguments"]
    assert json.loads(args[0]) == {"city": "Oslo"} and json.loads(args[1]) == {}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == [
        "tool_calls"
    ]
    usage = chunks[-1]
    assert (
        usage["choices"] == []
        and usage["usage"]["prompt_tokens"] == 22
        and usage["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
    )
    assert len({c["id"] for c in chunks}) == 1


@pytest.mark.parametrize(
    "name", ["throttlingException", "modelStreamErrorException", "validationException", "serviceUnavailableException"]
)
def test_exception_events_become_openai_error_payloads(name):
    out = decode(
        [
            es.event("messageStart", {"role": "assistant"}),
            es.exception(name, "it broke"),
            es.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "never"}}),
        ]
    )
    assert out[-1]["error"]["code"] == name and "it broke" in out[-1]["error"]["message"]
    assert len(out) == 2  # nothing after the exception, and no [DONE]


def test_bad_crc_is_value_error():
    d = ConverseStreamDecoder("m")
    d.feed(es.event("messageStart", {"role": "assistant"}))
    with pytest.raises(ValueError):
        d.feed(es.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}, corrupt=True))


@pytest.mark.parametrize("garbage", [b"data: {not json\n\n" * 3, b"\x00" * 40, b"\xff" * 16])
def test_garbage_is_value_error_not_a_hang(garbage):
    with pytest.raises(ValueError):
        ConverseStreamDecoder("m").feed(garbage)


def test_stream_without_message_stop_ends_without_done():
    out = decode(
        [
            es.event("messageStart", {"role": "assistant"}),
            es.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "a"}}),
        ]
    )
    assert b"[DONE]" not in out


def test_malformed_stop_reason_is_value_error():
    with pytest.raises(ValueError):
        decode(
            [
                es.event("messageStart", {"role": "assistant"}),
                es.event("messageStop", {"stopReason": "malformed_model_output"}),
            ]
        )


def test_tool_delta_without_start_is_value_error():
    with pytest.raises(ValueError):
        decode([es.event("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}})])
