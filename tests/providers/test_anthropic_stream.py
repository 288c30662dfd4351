"""Anthropic SSE events -> OpenAI chunk payloads: block/tool index mapping, usage, errors."""

from __future__ import annotations

import json

import msgspec
import pytest

from multihome.providers.anthropic.request import JSON_TOOL
from multihome.providers.anthropic.stream import AnthropicStreamDecoder
from multihome.providers.sse import DONE
from multihome.schema.peek import peek_decoder


def sse(kind: str, **data) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode({"type": kind, **data}) + b"\n\n"


START = sse(
    "message_start",
    message={
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 1,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 5,
        },
    },
)


def text_block(index, *words):
    out = [sse("content_block_start", index=index, content_block={"type": "text", "text": ""}), sse("ping")]
    out += [sse("content_block_delta", index=index, delta={"type": "text_delta", "text": w}) for w in words]
    return out + [sse("content_block_stop", index=index)]


def tool_block(index, call_id, name, *fragments):
    out = [
        sse(
            "content_block_start",
            index=index,
            content_block={"type": "tool_use", "id": call_id, "name": name, "input": {}},
        )
    ]
    out += [
        sse("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": f})
        for f in fragments
    ]
    return out + [sse("content_block_stop", index=index)]


def end(stop_reason, output_tokens=12):
    return [
        sse(
            "message_delta",
            delta={"stop_reason": stop_reason, "stop_sequence": None},
            usage={"output_tokens": output_tokens},
        ),
        sse("message_stop"),
    ]


def decode(events: list[bytes], split: int | None = None) -> list:
    """Run the decoder, optionally re-cutting the byte stream into `split`-byte network reads."""
    dec = AnthropicStreamDecoder("fallback")
    data = b"".join(events)
    reads = [data] if split is None else [data[i : i + split] for i in range(0, len(data), split)]
    out = []
    for piece in reads:
        out += dec.feed(piece)
    out += dec.end()
    return [p if p == DONE else json.loads(p) for p in out]


def fold(chunks):
    text, calls, finish, usage = "", {}, [], None
    for c in chunks:
        if c == DONE:
            continue
        if c.get("usage"):
            usage = c["usage"]
        for ch in c["choices"]:
            d = ch["delta"]
            text += d.get("content") or ""
            for tc in d.get("tool_calls") or ():
                slot = calls.setdefault(tc["index"], {"id": None, "name": None, "args": ""})
                slot["id"] = tc.get("id") or slot["id"]
                slot["name"] = tc.get("function", {}).get("name") or slot["name"]
                slot["args"] += tc.get("function", {}).get("arguments") or ""
            if ch["finish_reason"]:
                finish.append(ch["finish_reason"])
    return text, calls, finish, usage


PARALLEL = [
    START,
    *text_block(0, "Let me ", "check."),
    *tool_block(1, "toolu_a", "get_weather", "", '{"ci', 'ty": "Pa', 'ris"}'),
    *tool_block(2, "toolu_b", "get_time", "", '{"tz":', ' "CET"}'),
    *end("tool_use"),
]

CASES = [
    ("text", [START, *text_block(0, "Hello", " world"), *end("end_turn")], "Hello world", {}, "stop"),
    ("stop sequence", [START, *text_block(0, "a"), *end("stop_sequence")], "a", {}, "stop"),
    ("max tokens", [START, *text_block(0, "a"), *end("max_tokens")], "a", {}, "length"),
    ("refusal", [START, *text_block(0, "I can"), *end("refusal")], "I can", {}, "content_filter"),
    (
        "parallel tools after text",
        PARALLEL,
        "Let me check.",
        {
            0: {"id": "toolu_a", "name": "get_weather", "args": '{"city": "Paris"}'},
            1: {"id": "toolu_b", "name": "get_time", "args": '{"tz": "CET"}'},
        },
        "tool_calls",
    ),
    (
        "json mode",
        [START, *tool_block(0, "toolu_j", JSON_TOOL, "", '{"a"', ": 1}"), *end("tool_use")],
        '{"a": 1}',
        {},
        "stop",
    ),
    (
        "thinking ignored",
        [
            START,
            sse("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
            sse("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hm"}),
            sse("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "s"}),
            sse("content_block_stop", index=0),
            *text_block(1, "ok"),
            *end("end_turn"),
        ],
        "ok",
        {},
        "stop",
    ),
]


@pytest.mark.parametrize("split", [None, 1, 7], ids=["whole", "byte-by-byte", "7-byte reads"])
@pytest.mark.parametrize("events, text, calls, finish", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stream_translation(events, text, calls, finish, split):
    chunks = decode(events, split)
    got_text, got_calls, got_finish, usage = fold(chunks)
    assert (got_text, got_calls, got_finish) == (text, calls, [finish])
    assert chunks[-1] == DONE
    # role chunk first; the usage chunk just before [DONE], with empty choices.
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"] == [] and usage == {
        "prompt_tokens": 75,
        "completion_tokens": 12,
        "total_tokens": 87,
        "prompt_tokens_details": {"cached_tokens": 50},
    }
    assert {c["id"] for c in chunks[:-1]} == {"chatcmpl-msg_9"}
    for c in chunks[:-1]:
        peek_decoder.decode(json.dumps(c).encode())  # every chunk is something the relay can read


def test_first_tool_fragment_carries_id_and_name_later_ones_only_arguments():
    chunks = decode(PARALLEL)
    tool_deltas = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks[:-2]
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    ]
    assert tool_deltas[0] == {
        "index": 0,
        "id": "toolu_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert tool_deltas[1] == {"index": 0, "function": {"arguments": '{"ci'}}
    assert [d["index"] for d in tool_deltas] == [0, 0, 0, 0, 1, 1, 1]  # empty fragments are not forwarded


def test_error_event_becomes_an_error_payload_and_ends_the_stream():
    chunks = decode(
        [
            START,
            *text_block(0, "Hi"),
            sse("error", error={"type": "overloaded_error", "message": "Overloaded"}),
            *end("end_turn"),
        ]
    )
    last = chunks[-1]
    assert last["error"]["code"] == "overloaded_error" and "Overloaded" in last["error"]["message"]
    assert peek_decoder.decode(json.dumps(last).encode()).has_error
    assert DONE not in chunks


def test_stream_without_message_stop_yields_no_done():
    chunks = decode([START, *text_block(0, "Hi")])
    assert DONE not in chunks and fold(chunks)[2] == []


def test_malformed_event_raises_after_delivering_what_came_before():
    dec = AnthropicStreamDecoder("m")
    good = dec.feed(START + text_block(0, "Hi")[0] + text_block(0, "Hi")[2] + b"event: x\ndata: {not json\n\n")
    assert len(good) == 2  # role + "Hi"
    with pytest.raises(ValueError):
        dec.feed(b"")
    with pytest.raises(ValueError):
        AnthropicStreamDecoder("m").feed(b"data: {not json\n\n")


def test_a_thinking_delta_after_its_block_stopped_is_ignored_not_a_crash():
    """A broken (or hostile) upstream writing to a thinking block it already closed: the block went to the
    client whole at its stop, so what comes after is dropped, and the stream goes on (was a KeyError: a 500)."""
    chunks = decode(
        [
            START,
            sse("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
            sse("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hm"}),
            sse("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "s"}),
            sse("content_block_stop", index=0),
            sse("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "late"}),
            sse("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "late"}),
            sse("content_block_stop", index=0),
            *text_block(1, "ok"),
            *end("end_turn"),
        ]
    )
    blocks = [b for c in chunks[:-1] for ch in c["choices"] for b in ch["delta"].get("thinking_blocks") or ()]
    assert blocks == [{"type": "thinking", "thinking": "hm", "signature": "s"}]
    assert fold(chunks)[0] == "ok" and chunks[-1] == DONE


def test_message_start_gives_the_prompts_usage_before_any_output():
    """What the Anthropic door's own message_start carries (api/anthropic/stream.py): cache reads and writes
    within the prompt, as OpenAI counts it, the reads named apart."""
    dec = AnthropicStreamDecoder("fallback")
    assert dec.start_usage is None
    dec.feed(START)
    usage = dec.start_usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (75, 1, 50)
