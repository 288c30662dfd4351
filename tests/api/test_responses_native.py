"""A native Responses turn: the body sent upstream (the client's fields, the whole context as input, no
state fields, store false, encrypted reasoning asked for), and the answer read back (stream and unary),
reasoning items kept with their summary."""

from __future__ import annotations

import json

import msgspec

from multihome.api.responses.items import stored_items
from multihome.api.responses.native import NativeStream, NativeTurn, from_response, upstream_items
from multihome.api.responses.translate import Shell
from multihome.schema.responses import parse_create

REASONING = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "The user wants a haiku."}],
    "encrypted_content": "gAAAAB-sealed-by-openai",
}


def _body(turn: NativeTurn) -> dict:
    return json.loads(msgspec.json.encode(turn.raw()))


def test_the_native_body_is_the_clients_with_the_whole_context():
    raw = {
        "model": "gpt",
        "input": "and now?",
        "previous_response_id": "resp_x",
        "store": True,
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"verbosity": "low"},
        "truncation": "auto",
        "multihome": {"route": {"deployments": ["oa"]}},
    }
    body = json.dumps(raw).encode()
    req = parse_create(body)
    context = [*stored_items("hi"), REASONING, {"type": "reasoning", "id": "rs_2", "summary": []}]
    sent = _body(NativeTurn(body, req, context, stored_items(req.input)))
    assert sent["store"] is False and "previous_response_id" not in sent and "multihome" not in sent
    assert sent["include"] == ["reasoning.encrypted_content"]
    assert sent["reasoning"] == raw["reasoning"] and sent["text"] == raw["text"] and sent["truncation"] == "auto"
    kinds = [(i["type"], i.get("id")) for i in sent["input"]]
    # A reasoning item goes back only with its encrypted content (and its id); others lose the gateway's ids.
    assert kinds == [("message", None), ("reasoning", "rs_1"), ("message", None)]


def test_upstream_items_do_not_change_the_stored_ones():
    items = stored_items("hi")
    upstream_items(items)
    assert items[0]["id"].startswith("msg_")


def test_mcp_items_go_upstream_as_the_function_calls_the_gateway_ran():
    """A stateless upstream never ran the gateway's MCP calls (and takes no mcp item without the id it
    would look up): each call goes as a function_call and its output, as to a chat upstream; a listing
    and a pending or approved request go as nothing, a refused one as a call answered with the refusal."""
    listed = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "tools", "tools": []}
    call = {"type": "mcp_call", "id": "mcp_1", "server_label": "tools", "name": "add", "arguments": "{}", "output": "2"}
    failed = {**call, "id": "mcp_2", "output": None, "error": "boom"}
    asked = {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "tools", "name": "echo", "arguments": "{}"}
    refused = {"type": "mcp_approval_response", "id": "mcpa_1", "approval_request_id": "mcpr_1", "approve": False}
    sent = upstream_items([*stored_items("hi"), listed, call, failed, asked, refused])
    assert [(i["type"], i.get("call_id")) for i in sent] == [
        ("message", None),
        ("function_call", "mcp_1"),
        ("function_call_output", "mcp_1"),
        ("function_call", "mcp_2"),
        ("function_call_output", "mcp_2"),
        ("function_call", "mcpr_1"),
        ("function_call_output", "mcpr_1"),
    ]
    assert sent[1]["name"] == "tools__add" and sent[2]["output"] == "2" and "boom" in sent[4]["output"]
    assert "did not approve" in sent[6]["output"]


def _shell(**fields) -> Shell:
    return Shell(parse_create(json.dumps({"model": "gpt", "input": "x", **fields}).encode()))


def test_a_unary_answer_keeps_its_items_usage_and_status():
    usage = {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
    text = {"type": "message", "id": "msg_u", "role": "assistant", "status": "incomplete", "content": []}
    answer = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "usage": usage}
    outcome = from_response(json.dumps({**answer, "output": [REASONING, text]}).encode(), "oa")
    assert outcome.status == "incomplete" and outcome.incomplete == "max_output_tokens"
    assert outcome.output[0] == REASONING and outcome.usage == usage


def _events(raw: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_a_stream_is_renumbered_after_the_gateways_own_envelope():
    conv = NativeStream(_shell())
    first = _events(conv.start())
    item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": []}
    final = {"status": "completed", "output": [REASONING, item], "usage": {"input_tokens": 1, "output_tokens": 1}}
    upstream = [
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": REASONING},
        {"type": "response.output_item.done", "sequence_number": 9, "output_index": 0, "item": REASONING},
        {"type": "response.completed", "sequence_number": 30, "response": final},
    ]
    out = conv.feed(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in upstream) + b"data: [DONE]\n\n")
    events = _events(out)
    assert [e["sequence_number"] for e in first + events] == [0, 1, 2, 3]
    assert conv.finished and conv.error is None
    response = conv.response()
    assert response["status"] == "completed" and response["output"][0] == REASONING
    assert response["id"] == conv.shell.id and _events(conv.terminal(response))[0]["sequence_number"] == 4


def test_a_stream_that_breaks_fails_with_what_was_done():
    conv = NativeStream(_shell())
    conv.start()
    done = {"type": "response.output_item.done", "output_index": 0, "item": REASONING}
    error = {"error": {"message": "The stream broke", "code": "upstream_stream_interrupted"}}
    out = conv.feed(b"data: " + json.dumps(done).encode() + b"\n\ndata: " + json.dumps(error).encode() + b"\n\n")
    assert [e["type"] for e in _events(out)] == ["response.output_item.done", "error"]
    response = conv.response()
    assert response["status"] == "failed" and response["output"] == [REASONING]
    assert "broke" in response["error"]["message"]
