"""What the Responses and Conversations APIs refuse, end to end with the official openai SDK (SQLite and
PostgreSQL): a list cursor that names no item, two `mcp` tools with one `server_label`, a
`function_call` without its `function_call_output` (in the input, the previous response or the
conversation), and hostile values of the other fields. Each is OpenAI's error shape, a 4xx naming the
param, decided before any upstream call (checked at the simulators' request logs), never a 500."""

from __future__ import annotations

import threading

import openai
import pytest

from .test_responses import WEATHER, World, running_world


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    yield from running_world(request, tmp_path_factory)


def _upstream_calls(world: World) -> int:
    """Requests the simulators behind `gpt` and `claude` have received."""
    return len(world.sims["oa"].requests()) + len(world.sims["an"].requests())


def test_a_cursor_that_names_no_item_is_a_400(world):
    client = world.sdk()
    made = client.responses.create(
        model="gpt", input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    )
    items = client.responses.input_items.list(made.id, order="asc", limit=1)
    assert len(items.data) == 1 and items.has_more
    rest = client.responses.input_items.list(made.id, order="asc", after=items.data[0].id)
    assert [i.id for i in rest] == [client.responses.input_items.list(made.id, limit=1).data[0].id]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.input_items.list(made.id, after="msg_never_issued")
    assert err.value.status_code == 400 and err.value.param == "after" and "msg_never_issued" in err.value.message
    with world.http() as http:  # the older `before`, which the SDK no longer sends
        resp = http.get(f"/v1/responses/{made.id}/input_items", params={"before": "msg_never_issued"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "before"

    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"}])
    first = client.conversations.items.list(conv.id)
    assert client.conversations.items.list(conv.id, after=first.data[0].id).data == []  # a real cursor: the end
    with pytest.raises(openai.BadRequestError) as err:
        client.conversations.items.list(conv.id, after="msg_never_issued")
    assert err.value.param == "after"
    with world.http() as http:
        resp = http.get(f"/v1/conversations/{conv.id}/items", params={"before": first.data[0].id})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "before"
    with pytest.raises(openai.NotFoundError):  # another tenant's conversation: not found, whatever the cursor
        world.sdk("globex").conversations.items.list(conv.id, after="msg_never_issued")


def test_two_mcp_tools_with_one_server_label_are_a_400(world):
    client = world.sdk()
    before = _upstream_calls(world)
    tool = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp"}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt", input="look it up", tools=[tool, WEATHER, {**tool, "server_url": "x"}])
    assert err.value.param == "tools[2].server_label" and "docs" in err.value.message
    assert err.value.body["type"] == "invalid_request_error"
    assert _upstream_calls(world) == before


@pytest.mark.parametrize("model", ["gpt", "claude"])  # native (OpenAI's /responses) and translated (Anthropic)
def test_a_function_call_without_its_output_is_refused_before_any_upstream_call(world, model):
    client = world.sdk()
    dangling = {"type": "function_call", "call_id": "call_dangling_1", "name": "get_weather", "arguments": "{}"}
    before = _upstream_calls(world)
    with pytest.raises(openai.BadRequestError) as err:  # in the input
        client.responses.create(model=model, input=[{"role": "user", "content": "hi"}, dangling], tools=[WEATHER])
    assert err.value.body["message"] == "No tool output found for function call call_dangling_1."
    assert err.value.param == "input" and err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="call_dangling_1"):  # the same in the background
        client.responses.create(model=model, input=[dangling], tools=[WEATHER], background=True)
    assert _upstream_calls(world) == before

    # In the previous response: the model called a tool and the next turn did not answer it.
    called = client.responses.create(model=model, input="What is the weather in Paris?", tools=[WEATHER])
    call = next(item for item in called.output if item.type == "function_call")
    before = _upstream_calls(world)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, input="never mind", previous_response_id=called.id, tools=[WEATHER])
    assert err.value.body["message"] == f"No tool output found for function call {call.call_id}."
    assert err.value.param == "input"
    assert _upstream_calls(world) == before
    answered = client.responses.create(
        model=model,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert answered.status == "completed"

    # In a conversation: a call added without its result; the turn that answers it goes through.
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "weather?"}])
    client.conversations.items.create(conv.id, items=[dangling])
    with pytest.raises(openai.BadRequestError, match="call_dangling_1"):
        client.responses.create(model=model, input="hello", conversation=conv.id, tools=[WEATHER])
    assert _upstream_calls(world) == before + 1
    done = client.responses.create(
        model=model,
        conversation=conv.id,
        input=[{"type": "function_call_output", "call_id": "call_dangling_1", "output": "rain"}],
        tools=[WEATHER],
    )
    assert done.status == "completed"


def test_a_result_whose_call_was_deleted_from_the_conversation_is_a_400_that_says_so(world):
    """Was: sent on, refused by Anthropic at every later turn in its own words (and accepted by others)."""
    client = world.sdk()
    call = {"type": "function_call", "call_id": "call_gone", "name": "get_weather", "arguments": "{}"}
    answer = {"type": "function_call_output", "call_id": "call_gone", "output": "sunny"}
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "weather?"}, call, answer])
    items = {i.type: i.id for i in client.conversations.items.list(conv.id).data}
    client.conversations.items.delete(items["function_call"], conversation_id=conv.id)
    before = _upstream_calls(world)
    for model in ("gpt", "claude"):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=model, conversation=conv.id, input="and now?", tools=[WEATHER])
        assert err.value.code == "orphaned_function_call_output" and err.value.param == "conversation"
        assert "call_gone" in err.value.message
    assert _upstream_calls(world) == before
    client.conversations.items.delete(items["function_call_output"], conversation_id=conv.id)
    assert client.responses.create(model="claude", conversation=conv.id, input="and now?").status == "completed"


def test_hostile_fields_are_4xx_never_500(world):
    """Odd values of the fields a client controls: each a 4xx in OpenAI's shape, none reaching upstream."""
    acme, globex = world.sdk("acme"), world.sdk("globex")
    theirs = globex.responses.create(model="gpt", input="globex only")
    their_conv = globex.conversations.create()
    before = _upstream_calls(world)
    bad = [
        {"max_output_tokens": 0},
        {"max_output_tokens": -5},
        {"max_output_tokens": 2**70},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"metadata": {"k" * 65: "v"}},
        {"metadata": {"k": "v" * 513}},
        {"metadata": {"k": 1}},
        {"include": ["reasoning.encrypted_content"] * 10_000 + ["nope"]},
        {"include": "reasoning.encrypted_content"},
        {"include": [None]},
        {"truncation": "sometimes"},
        {"truncation": 1},
        {"text": {"format": {"type": "json_schema", "name": "x"}}},
        {"text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": 5}}},
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": []}}},
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": "{}"}}},
        {"text": {"format": {"type": "json_schema", "name": "has space", "schema": {"type": "object"}}}},
        {"text": {"format": {"type": "json_schema", "name": "n" * 65, "schema": {"type": "object"}}}},
        {"text": {"format": {"type": "xml"}}},
        {"text": {"format": None, "verbosity": "loud"}},
        {"temperature": 3},
        {"top_p": -1},
        {"previous_response_id": theirs.id},
        {"conversation": their_conv.id},
        {"conversation": {"id": 5}},
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        {"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
        {"tool_choice": {"type": "function"}},
        {"tools": [{"type": "function", "name": "f", "parameters": 5}]},
        {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
        {"input": []},
        {"input": [{"role": "user", "content": []}]},
        {"input": [{"type": "function_call", "call_id": "", "name": "f", "arguments": "{}"}]},
        {"model": ""},
        {"model": "no-such-model"},
        {"conversation": ""},
        {"previous_response_id": ""},
        {"previous_response_id": "resp_" + "x" * 5000},
        {"stream": True, "background": True, "store": False},
        {"stream_options": {"include_obfuscation": False}},
        {"reasoning": {"effort": "enormous"}},
        {"service_tier": 5},
        {"parallel_tool_calls": "yes"},
        {"user": ["a"]},
    ]
    conversations = [
        ("post", "/v1/conversations", {"metadata": {f"k{i}": "v" for i in range(17)}}),
        ("post", "/v1/conversations", {"items": [{"role": "user", "content": "x"}] * 21}),
        ("post", "/v1/conversations", {"items": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}),
        ("post", "/v1/conversations", {"items": "hello"}),
        ("post", f"/v1/conversations/{their_conv.id}", {"metadata": {}}),
        ("post", "/v1/conversations/conv_nope", {"metadata": None}),
        ("post", f"/v1/conversations/{their_conv.id}/items", {"items": []}),
        ("get", "/v1/conversations/conv_nope/items?limit=0", None),
        ("get", "/v1/conversations/conv_nope/items?order=sideways", None),
        ("get", f"/v1/conversations/{their_conv.id}/items?limit=%C2%B2", None),  # '²': a digit to isdigit(), not int()
        ("get", f"/v1/responses/{theirs.id}/input_items?limit=%E2%91%A0", None),  # '①' likewise (both were a 500)
        ("get", "/v1/conversations/" + "c" * 5000, None),
        ("get", f"/v1/conversations/{their_conv.id}/items/msg_x", None),
        ("delete", f"/v1/conversations/{their_conv.id}/items/msg_x", None),
        ("get", f"/v1/responses/{theirs.id}/input_items?limit=101", None),
        ("get", f"/v1/responses/{theirs.id}?stream=true&starting_after=x", None),
    ]
    with world.http() as http:
        answers = [(extra, http.post("/v1/responses", json={"model": "gpt", "input": "hi", **extra})) for extra in bad]
        wrong = [(extra, r.status_code, r.text[:200]) for extra, r in answers if not 400 <= r.status_code < 500]
        assert not wrong, wrong
        for method, path, body in conversations:
            answers.append(((method, path, body), http.request(method, path, json=body)))
        wrong = [(extra, r.status_code, r.text[:200]) for extra, r in answers if not 400 <= r.status_code < 500]
        assert not wrong, wrong
        for _, resp in answers:
            assert set(resp.json()["error"]) == {"message", "type", "param", "code"}, resp.text
        for path in (
            f"/v1/responses/{theirs.id}",
            f"/v1/responses/{theirs.id}/input_items",
            f"/v1/conversations/{their_conv.id}",
            f"/v1/conversations/{their_conv.id}/items",
        ):
            assert http.get(path).status_code == 404, path
        assert http.post(f"/v1/responses/{theirs.id}/cancel").status_code == 404
        assert http.delete(f"/v1/conversations/{their_conv.id}").status_code == 404
    assert _upstream_calls(world) == before
    assert globex.responses.retrieve(theirs.id).output_text  # untouched
    with pytest.raises(openai.NotFoundError):
        acme.conversations.items.create(their_conv.id, items=[{"type": "message", "role": "user", "content": "x"}])


def test_concurrent_adds_of_one_calls_result_add_it_once(world):
    """Adds checked against the conversation's items (a result must answer a call, and only once) and racing
    each other: in every round exactly one is added and the others are the duplicate's 400, on both stores."""
    client = world.sdk()
    n = 8
    for round_ in range(5):
        call_id = f"call_race_{round_}"
        call = {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{}"}
        conv = client.conversations.create(items=[call])
        result = {"type": "function_call_output", "call_id": call_id, "output": "sunny"}
        start = threading.Barrier(n)
        outcomes: list[tuple[int, str | None]] = []

        def add(conv_id: str = conv.id, result: dict = result, start: threading.Barrier = start) -> None:
            with world.http() as http:
                start.wait(timeout=20)
                resp = http.post(f"/v1/conversations/{conv_id}/items", json={"items": [result]})
                outcomes.append((resp.status_code, resp.json()["error"]["code"] if resp.status_code != 200 else None))

        threads = [threading.Thread(target=add) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes) == [(200, None)] + [(400, "duplicate_call_id")] * (n - 1), (round_, outcomes)
        kinds = [i.type for i in client.conversations.items.list(conv.id, limit=100).data]
        assert kinds.count("function_call_output") == 1
