"""MCP items in the Responses API, without a server: what a request may carry, what a provider is sent
(an mcp_call is a function call and its output, always as a pair), the stream events an agent step
makes of a model's calls, the limits a request may lower, and the store's refusal of a call without
its result."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec
import pytest

from multihome.api.responses.agent import Limits
from multihome.api.responses.items import stored_items
from multihome.api.responses.stream import ResponsesStream
from multihome.api.responses.translate import Shell, to_canonical
from multihome.providers.sse import frame
from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_create
from multihome.state.pairs import BrokenPair, check_pairs
from multihome.tools.names import NameMap, function_name

MCP = {"type": "mcp", "server_label": "crm", "server_url": "https://crm.example/mcp", "headers": {"X-Key": "s3cret"}}
LISTED = {
    "type": "mcp_list_tools",
    "id": "mcpl_1",
    "server_label": "crm",
    "tools": [{"name": "find", "input_schema": {}}],
}
CALL = {
    "type": "mcp_call",
    "id": "mcp_1",
    "server_label": "crm",
    "name": "find",
    "arguments": '{"q": "acme"}',
    "output": "found acme",
}


def req(**body) -> object:
    return parse_create(msgspec.json.encode({"model": "g", "tools": [MCP], **body}))


def test_an_mcp_tool_and_mcp_items_are_accepted_and_stored_in_openais_shape():
    asked = {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "crm", "name": "find", "arguments": "{}"}
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}
    parsed = req(input=[{"role": "user", "content": "hi"}, LISTED, CALL, asked, answer])
    items = stored_items(parsed.input)
    assert items[1] == {**LISTED, "error": None}
    assert items[2] == {**CALL, "approval_request_id": None, "error": None, "status": "completed"}
    assert items[3] == asked
    assert items[4]["type"] == "mcp_approval_response" and items[4]["id"].startswith("mcpa_")
    # The echo never carries the request's headers (credentials).
    echoed = Shell(parsed).render("completed", [])["tools"][0]
    assert echoed["headers"] is None and echoed["server_label"] == "crm" and "s3cret" not in str(echoed)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"tools": [{"type": "mcp"}]}, "tools[0].server_label"),
        ({"input": [{**CALL, "output": None}]}, "input[0]"),  # a call without its result
        ({"input": [{"type": "mcp_approval_response", "approve": True}]}, "input[0]"),
        ({"input": [{k: v for k, v in LISTED.items() if k != "tools"}]}, "input[0]"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ],
)
def test_bad_mcp_requests_name_the_field(body, param):
    with pytest.raises(ApiError) as err:
        parse_create(msgspec.json.encode({"model": "g", "input": "x", **body}))
    assert err.value.status == 400 and err.value.body.param == param


def test_a_provider_sees_an_mcp_call_as_a_function_call_and_its_output():
    parsed = req(input="go")
    failed = {**CALL, "id": "mcp_2", "output": None, "error": {"type": "mcp_tool_execution_error", "content": []}}
    asked = {"type": "mcp_approval_request", "id": "mcpr_9", "server_label": "crm", "name": "find", "arguments": "{}"}
    refused = {"type": "mcp_approval_response", "id": "a", "approval_request_id": "mcpr_9", "approve": False}
    functions = [{"type": "function", "function": {"name": "crm__find", "parameters": {"type": "object"}}}]
    canonical, _ = asyncio.run(to_canonical(parsed, [LISTED, CALL, failed, asked], [refused], functions))
    messages = msgspec.to_builtins(canonical.request.messages)
    roles = [m["role"] for m in messages]
    assert roles == ["assistant", "tool", "assistant", "tool", "assistant", "tool"]  # three pairs, nothing dangling
    assert messages[0]["tool_calls"][0]["function"] == {"name": "crm__find", "arguments": '{"q": "acme"}'}
    assert messages[1]["content"] == "found acme" and messages[3]["content"].startswith("[MCP tool error]")
    assert "did not approve" in messages[5]["content"] and messages[5]["tool_call_id"] == "mcpr_9"
    assert [t.function.name for t in canonical.request.tools] == ["crm__find"]  # the mcp tool itself is not sent


def test_function_names_are_the_same_alone_and_in_a_listing():
    tools = ["find", "weather.get-current", "a" * 70]
    listing = NameMap("crm", tools)
    assert [function_name("crm", t) for t in tools] == [listing.function(t) for t in tools]


def _events(conv: ResponsesStream, pieces: list[bytes]) -> list[dict]:
    wire = b"".join(conv.feed(p) for p in pieces)
    return [msgspec.json.decode(block.split(b"\n")[1][len(b"data: ") :]) for block in wire.split(b"\n\n") if block]


def _call_chunk(index: int, name: str | None, args: str, call_id: str | None = None) -> bytes:
    call = {"index": index, "function": {"arguments": args, **({"name": name} if name else {})}}
    if call_id:
        call["id"] = call_id
    return frame(msgspec.json.encode({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))


def test_an_agent_steps_calls_stream_as_mcp_items():
    conv = ResponsesStream(Shell(req(input="go")), seq=7, base=2)
    conv.mcp = lambda fn: {
        "crm__find": ("mcp_call", "crm", "find"),
        "crm__drop": ("mcp_approval_request", "crm", "drop"),
    }.get(fn)
    finish = frame(msgspec.json.encode({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
    events = _events(
        conv,
        [
            _call_chunk(0, "crm__find", '{"q":', "c1"),
            _call_chunk(0, None, '"x"}'),
            _call_chunk(1, "crm__drop", "{}", "c2"),
        ]
        + [finish, frame(b"[DONE]")],
    )
    types = [e["type"] for e in events]
    assert types == [
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.delta",
        "response.output_item.added",
        "response.mcp_call_arguments.done",  # the call has not run: its output_item.done comes after it did
        "response.output_item.done",  # the approval request
    ]
    assert [e["sequence_number"] for e in events] == list(range(7, 7 + len(events)))
    assert events[0]["output_index"] == 2 and events[0]["item"]["type"] == "mcp_call"
    assert events[4]["item"] == {
        "type": "mcp_approval_request",
        "id": events[4]["item"]["id"],
        "server_label": "crm",
        "name": "drop",
        "arguments": "",
    }
    output = conv.outcome().output
    assert [(i["type"], i["name"], i["arguments"]) for i in output] == [
        ("mcp_call", "find", '{"q":"x"}'),
        ("mcp_approval_request", "drop", "{}"),
    ]


def test_a_request_may_lower_the_limits_never_raise_them():
    limits = Limits(max_steps=10, max_tool_calls=50, max_run_s=600, max_spend=Decimal("5"))
    ext = {"multihome": {"agent": {"max_steps": 20, "max_spend": 1, "max_run_s": 30}}}
    narrowed = limits.narrowed(req(input="x", max_tool_calls=3, **ext))
    assert narrowed == Limits(10, 3, 30, Decimal("1"))
    with pytest.raises(ApiError) as err:
        limits.narrowed(req(input="x", multihome={"agent": {"max_stepz": 2}}))
    assert err.value.body.param == "multihome.agent"


def test_the_store_refuses_a_call_without_its_result():
    check_pairs([CALL, {**CALL, "output": None, "error": {"type": "http_error"}}])
    with pytest.raises(BrokenPair):
        check_pairs([{**CALL, "output": None}])


def test_a_stored_response_with_a_broken_pair_is_never_sealed_or_written():
    from multihome.state.store import StateStore, StoredResponse

    broken = {"output": [{**CALL, "output": None}]}
    record = StoredResponse(id="resp_1", tenant="t", status="completed", response=broken, input=[])
    store = StateStore.__new__(StateStore)  # refused before the keyring or the database is reached
    with pytest.raises(BrokenPair):
        asyncio.run(store.seal_response(record))
    with pytest.raises(BrokenPair):
        asyncio.run(store._seal_items("t", "conv_1", [{**CALL, "output": None}]))
