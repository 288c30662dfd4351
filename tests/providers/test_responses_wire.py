"""The native Responses stream decoder: the upstream's own created/in_progress are dropped, the stream ends
with [DONE] after its terminal event, and an error event carries a top-level `error` the relay recognises."""

from __future__ import annotations

import json

import pytest

from multihome.providers.responses_wire import ResponsesStreamDecoder
from multihome.schema.peek import peek_decoder


def _sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_the_envelope_events_are_dropped_and_done_follows_the_terminal_event():
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    raw = _sse(
        {"type": "response.created", "sequence_number": 0, "response": {"usage": None}},
        {"type": "response.in_progress", "sequence_number": 1, "response": {}},
        {"type": "response.output_text.delta", "sequence_number": 2, "delta": "hi"},
        {"type": "response.completed", "sequence_number": 3, "response": {"status": "completed", "usage": usage}},
        {"type": "response.output_text.delta", "sequence_number": 4, "delta": "after the end"},
    )
    decoder = ResponsesStreamDecoder()
    out = [p for i in range(0, len(raw), 7) for p in decoder.feed(raw[i : i + 7])]  # split anywhere
    assert [json.loads(p)["type"] for p in out[:-1]] == ["response.output_text.delta", "response.completed"]
    assert out[-1] == b"[DONE]"
    peek = peek_decoder.decode(out[1])
    assert peek.response is not None and peek.response.usage is not None
    assert (peek.response.usage.prompt_tokens, peek.response.usage.completion_tokens) == (7, 3)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "error", "code": "server_error", "message": "boom", "param": None},
        {"type": "response.failed", "response": {"status": "failed", "error": {"code": "x", "message": "boom"}}},
    ],
)
def test_an_upstream_failure_is_an_error_event_to_the_relay(event):
    out = ResponsesStreamDecoder().feed(_sse(event))
    assert out[-1] == b"[DONE]"
    assert peek_decoder.decode(out[0]).has_error and json.loads(out[0])["error"]["message"] == "boom"


def test_a_frame_that_is_not_json_is_a_corrupt_stream():
    with pytest.raises(ValueError):
        ResponsesStreamDecoder().feed(b"data: {not json\n\n")


def test_function_calls_of_a_native_answer_are_read_for_the_call_record():
    """The audit trail and call log name the calls a model asked for, whichever wire form served it."""
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "get_weather", "arguments": "{}"}
    body = {"object": "response", "output": [{"type": "message", "content": []}, item], "error": None}
    assert peek_decoder.decode(json.dumps(body).encode()).tool_calls() == [("get_weather", "call_9")]
    added = peek_decoder.decode(json.dumps({"type": "response.output_item.added", "item": item}).encode())
    assert added.item is not None and added.item.call() == [("get_weather", "call_9")]
