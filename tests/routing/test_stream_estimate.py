"""A stream that ends before the upstream reported its usage (the client left, a drain deadline cut it) is
charged an estimate of what it produced: 4 characters a token of its output (docs/metering.md "Estimated
usage"). Every kind of output counts: the text, a tool call's arguments, a refusal, and a native Responses
stream's text and argument deltas (not its audio). Before, only a chat chunk's text counted: a client could
leave during a long tool call, or any native Responses stream, and be charged no output at all."""

from __future__ import annotations

import json
from typing import Any, cast

from pyqwest import Response

from multihome.accounting.tracker import Accounting
from multihome.providers.openai.adapter import OpenAIAdapter
from multihome.providers.responses_wire import ResponsesStreamDecoder
from multihome.routing.attempts import Attempt, Served
from multihome.routing.stream_relay import StreamRelay
from multihome.schema.principal import Principal

ARGS = '{"city": "Lisbon", "unit": "celsius", "days": 14}'


class _Response:
    """Stands in for the upstream response; these tests feed `_process` directly (its reader is never read)."""

    content = None


def _relay(decoder=None) -> StreamRelay:
    adapter = OpenAIAdapter("http://openai.invalid/v1", "k")
    return StreamRelay(cast(Response, _Response()), adapter, "gpt-4o", "dep", forward_usage=True, decoder=decoder)


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def _delta(delta: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


def test_a_chat_stream_cut_in_a_tool_call_counts_the_arguments_written():
    relay = _relay()
    start = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}
    pieces = [ARGS[:20], ARGS[20:]]
    relay._process(
        _sse(
            _delta({"role": "assistant", "tool_calls": [start]}),
            *(_delta({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces),
        )
    )
    assert relay.usage is None and relay.tool_calls == [("weather", "call_1")]
    assert relay.content_chars == len(ARGS)


def test_a_chat_stream_s_refusal_and_text_count():
    relay = _relay()
    relay._process(_sse(_delta({"content": "Sure, "}), _delta({"refusal": "I cannot help with that."})))
    assert relay.content_chars == len("Sure, ") + len("I cannot help with that.")


def test_a_responses_stream_counts_its_text_and_argument_deltas_not_its_audio():
    relay = _relay(ResponsesStreamDecoder())
    relay._process(
        _sse(
            {"type": "response.created", "response": {"id": "r1", "status": "in_progress"}},
            {"type": "response.output_text.delta", "item_id": "m1", "output_index": 0, "delta": "Hello there"},
            {"type": "response.function_call_arguments.delta", "item_id": "f1", "output_index": 1, "delta": "city=x"},
            {"type": "response.audio.delta", "delta": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA"},
        )
    )
    assert relay.usage is None and not relay.error
    assert relay.content_chars == len("Hello there") + len("city=x")


def test_the_call_cut_before_its_usage_is_charged_its_output():
    relay = _relay()
    relay._process(
        _sse(_delta({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "w", "arguments": ARGS}}]}))
    )
    records: list = []
    sink = type("Sink", (), {"record": lambda self, r: records.append(r)})()
    tracker = Accounting([sink]).begin("r1", "chat", Principal(tenant="t", subject="s", source="api_key"), b"{}")
    assert tracker is not None
    dep = type(
        "Dep", (), {"name": "dep", "provider": "p", "adapter": relay._adapter, "region": None, "data_zone": None}
    )
    tracker.finish_produced(Served(dep(), 200, [Attempt("dep", "ok", 1.0)], stream=relay), 499, "cancelled")  # type: ignore[arg-type]
    (record,) = records
    assert record.usage.estimated and record.usage.completion_tokens == len(ARGS) // 4 > 0
