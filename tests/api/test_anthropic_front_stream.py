"""OpenAI chunk stream (as the relay forwards it) -> Anthropic SSE events, in the documented order."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from multihome.api.anthropic.stream import AnthropicStream, TranslatedRelay
from multihome.providers.openai_out import ChunkWriter, UsageOut
from multihome.providers.sse import DONE, frame
from multihome.routing.stream_relay import error_event as openai_error_event
from multihome.schema.anthropic import parse_messages

REQ = parse_messages(
    msgspec.json.encode(
        {"model": "g", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}], "stop_sequences": ["END"]}
    )
).request


def events(data: bytes) -> list[tuple[str, dict]]:
    """Parse Anthropic SSE: every event must carry `event:` and a `data:` whose type matches it."""
    out = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        name, payload = name_line[7:], msgspec.json.decode(data_line[6:])
        assert payload["type"] == name
        out.append((name, payload))
    return out


def run(payloads: list[bytes], split_every: int | None = None) -> list[tuple[str, dict]]:
    conv = AnthropicStream(REQ)
    wire = b"".join(frame(p) for p in payloads)
    pieces = [wire] if split_every is None else [wire[i : i + split_every] for i in range(0, len(wire), split_every)]
    out = b"".join(conv.feed(p) for p in pieces) + conv.end()
    return events(out)


def text_stream(w: ChunkWriter, finish: str = "stop") -> list[bytes]:
    return [w.role(), w.text("Hel"), w.text("lo"), w.finish(finish), w.usage(UsageOut(12, 2, 4)), DONE]


def test_text_stream_event_order_and_usage():
    got = run(text_stream(ChunkWriter("gpt-x", id="chatcmpl-s1")))
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert start["id"] == "msg_s1" and start["model"] == "gpt-x" and start["content"] == []
    assert start["usage"]["input_tokens"] == 0  # OpenAI reports usage only at the end
    assert got[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [e["delta"] for _, e in got[2:4]] == [
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo"},
    ]
    assert got[5][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert got[5][1]["usage"] == {
        "input_tokens": 8,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }


def test_a_stream_whose_chunks_have_a_null_id_is_answered_with_an_id_of_its_own():
    """Chunks with `"id": null` (some OpenAI-compatible servers): the text streams, under a `msg_` id of the
    stream's own (was: the first chunk unreadable, the stream an error)."""
    null_ids = [
        p if p == DONE else p.replace(b'"id":"chatcmpl-s1"', b'"id":null')
        for p in text_stream(ChunkWriter("gpt-x", id="chatcmpl-s1"))
    ]
    assert all(b"chatcmpl-s1" not in p for p in null_ids)
    got = run(null_ids)
    assert [name for name, _ in got][0] == "message_start" and got[-1][0] == "message_stop"
    msg_id = got[0][1]["message"]["id"]
    assert msg_id.startswith("msg_") and len(msg_id) > len("msg_")
    assert "".join(e["delta"]["text"] for name, e in got if name == "content_block_delta") == "Hello"


@pytest.mark.parametrize("split_every", [None, 1, 7, 50])
def test_network_chunking_does_not_change_the_events(split_every):
    assert run(text_stream(ChunkWriter("m", id="chatcmpl-a")), split_every) == run(
        text_stream(ChunkWriter("m", id="chatcmpl-a"))
    )


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_tokens"), ("content_filter", "refusal"), ("tool_calls", "tool_use")]
)
def test_finish_reason_in_message_delta(finish, reason):
    got = run(text_stream(ChunkWriter("m"), finish))
    assert got[-2][1]["delta"]["stop_reason"] == reason


def test_text_then_two_tool_calls_get_their_own_blocks_and_indices():
    w = ChunkWriter("m")
    payloads = [
        w.role(),
        w.text("Checking both."),
        w.tool_start(0, "call_a", "get_weather"),
        w.tool_args(0, '{"city":'),
        w.tool_args(0, '"Paris"}'),
        w.tool_start(1, "call_b", "get_time"),
        w.tool_args(1, '{"tz":"CET"}'),
        w.finish("tool_calls"),
        w.usage(UsageOut(30, 20)),
        DONE,
    ]
    got = run(payloads)
    shape = [(n, e.get("index"), (e.get("delta") or e.get("content_block") or {}).get("type")) for n, e in got]
    assert shape == [
        ("message_start", None, None),
        ("content_block_start", 0, "text"),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "tool_use"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert got[4][1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    partial = "".join(e["delta"]["partial_json"] for n, e in got if n == "content_block_delta" and e["index"] == 1)
    assert msgspec.json.decode(partial) == {"city": "Paris"}
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use" and got[-2][1]["usage"]["output_tokens"] == 20


def test_relay_error_event_mid_stream_becomes_an_anthropic_error_and_ends_the_stream():
    w = ChunkWriter("m")
    broken = openai_error_event("The stream from deployment 'd' broke after 2 events", "upstream_stream_interrupted")
    conv = AnthropicStream(REQ)
    out = conv.feed(frame(w.role()) + frame(w.text("Hi")) + broken + frame(w.text("late")))
    got = events(out + conv.end())
    assert [n for n, _ in got] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert got[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "The stream from deployment 'd' broke after 2 events"},
    }


def test_a_stream_that_stops_without_done_ends_with_an_error_not_a_silent_truncation():
    w = ChunkWriter("m")
    got = run([w.role(), w.text("Hi")])
    assert got[-1][0] == "error" and "incomplete" in got[-1][1]["error"]["message"]
    assert "message_stop" not in [n for n, _ in got]


def test_translated_relay_converts_the_rest_and_closes_the_real_relay():
    w = ChunkWriter("m")

    class FakeRelay:
        closed = False
        usage = "sentinel"

        async def rest(self):
            for p in (w.text(" there"), w.finish("stop"), DONE):
                yield frame(p)

        def close(self):
            self.closed = True

    relay, conv = FakeRelay(), AnthropicStream(REQ)
    first = conv.feed(frame(w.role()) + frame(w.text("Hi")))
    wrapped = TranslatedRelay(relay, conv)

    async def drain():
        return [p async for p in wrapped.rest()]

    rest = asyncio.run(drain())
    names = [n for n, _ in events(first + b"".join(rest))]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    wrapped.close()
    assert relay.closed and wrapped.usage == "sentinel"
