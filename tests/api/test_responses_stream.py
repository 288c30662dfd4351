"""OpenAI chunk stream (as the relay forwards it) -> Responses API events: OpenAI's order, one
sequence number per event, the terminal event only after the response was stored, and a stream that
breaks ends with `error` then `response.failed` (never a silent end)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from multihome.api.responses.items import chat_messages, stored_items
from multihome.api.responses.stream import ResponsesRelay, ResponsesStream
from multihome.api.responses.translate import Shell, to_canonical
from multihome.providers.sse import DONE, frame
from multihome.routing.stream_relay import error_event
from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_create

REQ = parse_create(b'{"model": "g", "input": "hi", "stream": true}')


def chunk(content: str | None = None, finish: str | None = None, tools: list | None = None, usage=None) -> bytes:
    delta: dict = {}
    if content is not None:
        delta["content"] = content
    if tools is not None:
        delta["tool_calls"] = tools
    body: dict = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        body = {"choices": [], "usage": usage}
    return frame(msgspec.json.encode(body))


class FakeRelay:
    """The relay's rest(): what it forwards after the first bytes."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def rest(self):
        for piece in self.pieces:
            yield piece

    def close(self) -> None:
        pass


def run(first: bytes, rest: list[bytes], store_fails: bool = False) -> tuple[list[dict], list[dict]]:
    conv = ResponsesStream(Shell(REQ))
    stored: list[dict] = []

    async def store(response: dict) -> bytes:
        if store_fails:
            return conv.fail("could not store")
        stored.append(response)
        return b""

    async def collect() -> bytes:
        out = [conv.start()]
        async for piece in ResponsesRelay(FakeRelay(rest), first, conv, store).rest():
            out.append(piece)
        return b"".join(out)

    wire = asyncio.run(collect())
    events = []
    for block in wire.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            payload = msgspec.json.decode(data[len("data: ") :])
            assert name == "event: " + payload["type"]
            events.append(payload)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events, stored


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_text_then_usage_in_openai_order_and_stored_before_completed():
    events, stored = run(chunk("Hel"), [chunk("lo"), chunk(finish="stop"), chunk(usage=USAGE), frame(DONE)])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello" and final["usage"]["input_tokens"] == 5
    assert stored == [final]


def test_parallel_calls_after_text_get_their_own_output_index():
    calls = [
        {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"x":'}},
        {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}},
    ]
    events, _ = run(
        chunk("Calling"),
        [
            chunk(tools=calls),
            chunk(tools=[{"index": 0, "function": {"arguments": "1}"}}]),
            chunk(finish="tool_calls"),
            frame(DONE),
        ],
    )
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "message"),
        (1, "function_call"),
        (2, "function_call"),
    ]
    done = {e["item_id"]: e["arguments"] for e in events if e["type"] == "response.function_call_arguments.done"}
    assert sorted(done.values()) == ['{"x":1}', "{}"]
    assert events[-1]["type"] == "response.completed"
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["message", "function_call", "function_call"]
    events, stored = run(chunk("a"), [])  # the relay stopped without [DONE]: never reported complete
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]


def test_length_is_incomplete_and_a_broken_stream_fails():
    events, stored = run(chunk("a"), [chunk(finish="length"), frame(DONE)])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    events, stored = run(chunk("a"), [error_event("upstream broke", "upstream_stream_interrupted")])
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "upstream broke" and events[-1]["response"]["error"]["code"] == "server_error"
    assert stored[0]["status"] == "failed"


def test_a_response_that_cannot_be_stored_is_not_reported_completed():
    events, stored = run(chunk("a"), [chunk(finish="stop"), frame(DONE)], store_fails=True)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"] and not stored


def test_items_become_chat_messages():
    req = parse_create(
        msgspec.json.encode(
            {
                "model": "g",
                "instructions": "be brief",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "sun"},
                    {
                        "type": "function_call_output",
                        "call_id": "c2",
                        "output": [{"type": "input_text", "text": "rain"}],
                    },
                    {"type": "reasoning", "summary": []},
                ],
                "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
                "max_output_tokens": 50,
            }
        )
    )
    canonical, _ = asyncio.run(to_canonical(req, [], stored_items(req.input)))
    messages = msgspec.json.decode(canonical.raw["messages"])
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sun"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]
    assert canonical.request.response_format.json_schema.name == "w"
    assert canonical.request.max_completion_tokens == 50 and "json_schema" in canonical.needs
    out: list = []
    chat_messages([], out)
    assert out == []


@pytest.mark.parametrize(
    "body,param",
    [
        ({"input": "x", "unknown_field": 1}, "unknown_field"),
        ({"input": "x", "prompt": {"id": "p"}}, "prompt"),
        ({"input": "x", "tool_choice": "auto"}, "tool_choice"),
        ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.schema"),
        ({}, "input"),
        ({"input": [{"role": "user", "content": "x", "id": "m" * 201}]}, "input[0].id"),
    ],
)
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(ApiError) as err:
        parse_create(msgspec.json.encode({"model": "g", **body}))
    assert err.value.status == 400 and err.value.body.param == param


def test_input_item_pages_follow_the_cursor_both_ways():
    from multihome.api.responses.common import ListQuery, page_of

    items = [{"id": f"i{n}"} for n in range(5)]
    first = page_of(items, ListQuery(limit=2))  # newest first by default
    assert [i["id"] for i in first["data"]] == ["i4", "i3"] and first["has_more"] and first["last_id"] == "i3"
    rest = page_of(items, ListQuery(limit=2, after="i3"))
    assert [i["id"] for i in rest["data"]] == ["i2", "i1"] and rest["has_more"]
    oldest = page_of(items, ListQuery(limit=10, after="i1", desc=False))
    assert [i["id"] for i in oldest["data"]] == ["i2", "i3", "i4"] and not oldest["has_more"]
    back = page_of(items, ListQuery(limit=2, before="i1"))
    assert [i["id"] for i in back["data"]] == ["i3", "i2"] and back["has_more"]
    for cursor in ("after", "before"):  # a cursor that names no item is a 400 naming it, not an empty page
        with pytest.raises(ApiError) as err:
            page_of(items, ListQuery(**{cursor: "nope"}))
        assert err.value.status == 400 and err.value.body.param == cursor


def test_a_message_is_done_before_the_call_after_it_begins_and_text_after_the_call_is_a_message_of_its_own():
    call = [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "{}"}}]
    events, stored = run(
        chunk("Let me look."), [chunk(tools=call), chunk("Done."), chunk(finish="tool_calls"), frame(DONE)]
    )
    steps = [(e["type"].rsplit(".", 1)[1], e["output_index"]) for e in events if ".output_item." in e["type"]]
    # The first message ends as the call begins; the second message ends the call's stream last of all.
    assert steps == [("added", 0), ("done", 0), ("added", 1), ("added", 2), ("done", 1), ("done", 2)]
    texts = [e["text"] for e in events if e["type"] == "response.output_text.done"]
    assert texts == ["Let me look.", "Done."]
    [response] = stored
    assert [i["type"] for i in response["output"]] == ["message", "function_call", "message"]
    assert all(i["status"] == "completed" for i in response["output"])
