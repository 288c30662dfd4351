"""What the stateful runtime answers, held against OpenAI's published schemas and the official SDK's types
(tests/openai_schemas.py): every Response, item list, conversation and stream event the real gateway
sends, through the foreground, streamed, background, resumed, MCP-tool and failing paths, on a
translated (Anthropic) and an OpenAI-compatible upstream. And what a hostile client sends: another
tenant's ids, ids of the wrong kind, a tool result without its call — a clear 4xx in OpenAI's error
shape, nothing of the other tenant's, nothing stored that would break the conversation later."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import openai
import pytest

from openai_schemas import problems

from .helpers import until
from .mcp_world import World, mcp, start_world
from .test_responses import WEATHER


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    yield from start_world(request, tmp_path_factory)


@pytest.fixture(autouse=True)
def _no_faults(world):
    yield
    for sim in world.sims.values():
        sim.clear_faults()


def conforms(name: str, obj: dict) -> dict:
    found = problems(name, obj)
    assert not found, f"{name} {json.dumps(obj)[:600]}\n" + "\n".join(found)
    return obj


def json_of(raw) -> dict:
    """The body as the gateway sent it (not the SDK's parsed model, which fills in what is absent)."""
    return raw.http_response.json()


def events_of(lines: Iterator[str]) -> list[dict]:
    events, data = [], []
    for line in lines:
        if line.startswith("data: "):
            data.append(line[6:])
        elif not line and data:
            if data != ["[DONE]"]:
                events.append(json.loads("\n".join(data)))
            data = []
    return events


def streamed(client: openai.OpenAI, **body) -> list[dict]:
    """Every event of a streamed create, each held against the schema of stream events."""
    with client.responses.with_streaming_response.create(stream=True, **body) as raw:
        events = events_of(raw.iter_lines())
    assert events and [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        conforms("ResponseStreamEvent", event)
    return events


def resumed(world: World, response_id: str, after: int) -> list[dict]:
    with world.sdk().responses.with_streaming_response.retrieve(response_id, stream=True, starting_after=after) as raw:
        events = events_of(raw.iter_lines())
    for event in events:
        conforms("ResponseStreamEvent", event)
    return events


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_responses_and_their_events_keep_to_the_published_schema(world, model):
    client = world.sdk()
    one = conforms("Response", json_of(client.responses.with_raw_response.create(model=model, input="hello")))
    conforms("Response", json_of(client.responses.with_raw_response.retrieve(one["id"])))
    conforms("ResponseItemList", json_of(client.responses.input_items.with_raw_response.list(one["id"])))

    called = json_of(client.responses.with_raw_response.create(model=model, input="Weather in Paris?", tools=[WEATHER]))
    conforms("Response", called)
    call = next(i for i in called["output"] if i["type"] == "function_call")
    answered = client.responses.with_raw_response.create(
        model=model,
        previous_response_id=called["id"],
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}],
    )
    conforms("Response", json_of(answered))
    conforms("ResponseItemList", json_of(client.responses.input_items.with_raw_response.list(answered.parse().id)))
    types = {e["type"] for e in streamed(client, model=model, input="stream it", tools=[WEATHER])}
    assert {"response.created", "response.output_item.done", "response.completed"} <= types

    queued = conforms(
        "Response", json_of(client.responses.with_raw_response.create(model=model, input="later", background=True))
    )
    assert queued["status"] in ("queued", "in_progress")
    done = until(lambda: (r := client.responses.retrieve(queued["id"])).status == "completed" and r, 30, "completion")
    conforms("Response", json_of(client.responses.with_raw_response.retrieve(done.id)))

    events = streamed(client, model=model, input="background stream", background=True)
    assert events[-1]["type"] == "response.completed"
    again = resumed(world, events[0]["response"]["id"], 2)
    assert [e["sequence_number"] for e in again] == [e["sequence_number"] for e in events[3:]]


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_mcp_items_and_events_keep_to_the_published_schema(world, model):
    """The mcp tool as the Response echoes it (no null server_description: a string in the schema), the
    mcp_list_tools / mcp_call / approval items and their stream events."""
    client = world.sdk()
    ran = json_of(
        client.responses.with_raw_response.create(model=model, input="steps=2: add, echo", tools=[mcp(world)])
    )
    conforms("Response", ran)
    assert {"mcp_list_tools", "mcp_call"} <= {i["type"] for i in ran["output"]}
    types = {e["type"] for e in streamed(client, model=model, input="steps=2: add, echo", tools=[mcp(world)])}
    assert {"response.mcp_call.completed", "response.mcp_list_tools.completed"} <= types

    asked = json_of(
        client.responses.with_raw_response.create(model=model, input="steps=1: add", tools=[mcp(world, "guarded")])
    )
    conforms("Response", asked)
    request = next(i for i in asked["output"] if i["type"] == "mcp_approval_request")
    approved = client.responses.with_raw_response.create(
        model=model,
        previous_response_id=asked["id"],
        tools=[mcp(world, "guarded")],
        input=[{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}],
    )
    conforms("Response", json_of(approved))
    conforms("ResponseItemList", json_of(client.responses.input_items.with_raw_response.list(approved.parse().id)))
    streamed(client, model=model, input="steps=1: add", tools=[mcp(world, "guarded")])

    # A registered server named by its label alone, and the memory tool (echoed as an mcp tool of its own).
    by_label = client.responses.with_raw_response.create(
        model=model, input="steps=1: add", tools=[{"type": "mcp", "server_label": "tools"}]
    )
    assert "server_url" not in conforms("Response", json_of(by_label))["tools"][0]
    memory = {"type": "memory", "agent_id": "conformance", "user_id": "u-1"}
    script = 'call memory_write {"text": "likes tea"}\ncall memory_search {"query": "tea"}'
    wrote = conforms(
        "Response", json_of(client.responses.with_raw_response.create(model=model, input=script, tools=[memory]))
    )
    assert [i["type"] for i in wrote["output"]].count("mcp_call") == 2  # Claude writes a message before a call
    streamed(client, model=model, input=script, tools=[memory])


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_an_agent_run_stopped_by_a_limit_keeps_to_the_published_schema(world, model):
    """Was `incomplete_details.reason: "max_tool_calls"`, outside OpenAI's enum: the SDKs' type and the
    published schema refused the Response (and its `response.incomplete` event). The reason is now
    OpenAI's for a budget that ran out; which of the gateway's limits it was is in `multihome.limit`."""
    client = world.sdk()
    body = {"model": model, "input": "steps=5: add", "tools": [mcp(world)], "max_tool_calls": 1}
    cut = conforms("Response", json_of(client.responses.with_raw_response.create(**body)))
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens", "multihome": {"limit": "max_tool_calls"}}
    assert streamed(client, **body)[-1]["type"] == "response.incomplete"
    queued = client.responses.create(background=True, **body)
    until(lambda: client.responses.retrieve(queued.id).status == "incomplete", 30, "the capped run")
    conforms("Response", json_of(client.responses.with_raw_response.retrieve(queued.id)))


def test_a_turn_after_mcp_calls_goes_on_natively(world):
    """The gateway ran the MCP calls; an upstream called natively (`store: false`) is sent them as the
    function calls and outputs they were, not as mcp items it never made (and would refuse)."""
    client = world.sdk()
    ran = client.responses.create(model="gpt", input="steps=1: add", tools=[mcp(world)])
    assert [i.type for i in ran.output] == ["mcp_list_tools", "mcp_call", "message"]
    after = client.responses.create(model="gpt", input="and what was it?", previous_response_id=ran.id)
    assert after.status == "completed"
    sent = json.loads(world.sims["oa"].requests()[-1]["body"])["input"]
    assert [i["type"] for i in sent] == ["message", "function_call", "function_call_output", "message", "message"]
    assert sent[1]["call_id"] == ran.output[1].id and sent[2]["output"] == ran.output[1].output


@pytest.mark.parametrize("stream", [False, True])
def test_a_conversation_deleted_while_the_model_answers_loses_no_answer(world, stream):
    """The answer was served and billed: the client gets it and can retrieve it (as a background turn's
    is kept); it is appended to nothing, the conversation being gone."""
    client = world.sdk()
    conv = client.conversations.create().id
    world.sims["oa"].fault(latency_ms=1500)
    before = len(world.sims["oa"].requests())
    got: dict = {}

    def turn() -> None:
        if stream:
            got["events"] = streamed(client, model="gpt", input="slow", conversation=conv)
        else:
            got["body"] = json_of(
                client.responses.with_raw_response.create(model="gpt", input="slow", conversation=conv)
            )

    worker = threading.Thread(target=turn)
    worker.start()
    until(lambda: len(world.sims["oa"].requests()) > before, 10, "the upstream call")  # the turn is under way
    client.conversations.delete(conv)
    worker.join(30)
    body = got["events"][-1]["response"] if stream else got["body"]
    assert body["status"] == "completed" and body["conversation"] == {"id": conv}
    assert client.responses.retrieve(body["id"]).output_text
    refused(404, lambda: client.conversations.items.list(conv))


def test_failed_and_incomplete_responses_keep_to_the_published_schema(world):
    """A failed Response's `error.code` is one of OpenAI's codes (the SDKs validate it against their
    enum); what went wrong is in the message, and the stream's `error` event keeps the gateway's code."""
    client = world.sdk()
    world.sims["oa"].fault(status=500)
    queued = client.responses.create(model="gpt", input="this fails", background=True)
    failed = until(lambda: (r := client.responses.retrieve(queued.id)).status == "failed" and r, 30, "failure")
    body = conforms("Response", json_of(client.responses.with_raw_response.retrieve(failed.id)))
    assert body["error"]["code"] == "server_error" and "Tried: oa" in body["error"]["message"]
    events = streamed(client, model="gpt", input="this fails too", background=True)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "all_deployments_failed"
    world.sims["oa"].clear_faults()

    world.sims["oa"].fault(cut_after=2)  # the upstream stream breaks after two words
    events = streamed(client, model="gpt", input="a sentence of several words please")
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    world.sims["oa"].clear_faults()

    world.sims["oa"].fault(content_filter="output")
    cut = conforms("Response", json_of(client.responses.with_raw_response.create(model="gpt", input="filtered")))
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "content_filter"}
    assert streamed(client, model="gpt", input="filtered")[-1]["type"] == "response.incomplete"


def test_conversations_and_their_items_keep_to_the_published_schema(world):
    client = world.sdk()
    created = client.conversations.with_raw_response.create(
        metadata={"topic": "demo"}, items=[{"type": "message", "role": "user", "content": "hi"}]
    )
    conv = conforms("ConversationResource", json_of(created))["id"]
    conforms("ConversationResource", json_of(client.conversations.with_raw_response.retrieve(conv)))
    conforms("ConversationResource", json_of(client.conversations.with_raw_response.update(conv, metadata={"a": "b"})))
    client.responses.create(model="gpt", input="a turn", conversation=conv)
    listed = conforms("ConversationItemList", json_of(client.conversations.items.with_raw_response.list(conv)))
    for item in listed["data"]:
        conforms(
            "ConversationItem",
            json_of(client.conversations.items.with_raw_response.retrieve(item["id"], conversation_id=conv)),
        )
    added = client.conversations.items.with_raw_response.create(
        conv, items=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "more"}]}]
    )
    item = conforms("ConversationItemList", json_of(added))["data"][0]["id"]
    conforms(
        "ConversationResource", json_of(client.conversations.items.with_raw_response.delete(item, conversation_id=conv))
    )
    conforms("DeletedConversationResource", json_of(client.conversations.with_raw_response.delete(conv)))
    with pytest.raises(openai.NotFoundError) as caught:
        client.conversations.retrieve(conv)
    conforms("ErrorResponse", caught.value.response.json())


def test_every_input_part_is_listed_in_the_published_shape(world):
    """Input items come back from input_items and the conversation's items as OpenAI lists them: an image
    sent without `detail` is listed with OpenAI's default (`detail` is required there; the SDK's type
    failed without it), an assistant's `input_text` as its `output_text`. A `detail` OpenAI does not
    define, or a part its role's listed item cannot hold, is a 400 naming it."""
    client = world.sdk()
    image = {"type": "input_image", "image_url": "https://img.example/cat.png"}
    parts = [
        {"type": "input_text", "text": "look"},
        image,
        {**image, "detail": "low"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
    ]
    conv = client.conversations.create().id
    made = client.responses.create(
        model="gpt",
        conversation=conv,
        input=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": parts},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "assistant", "content": [{"type": "input_text", "text": "said before"}]},
            {"role": "user", "content": [image]},
        ],
    )
    listed = conforms("ResponseItemList", json_of(client.responses.input_items.with_raw_response.list(made.id)))
    images = [p for item in listed["data"] for p in item["content"] if p["type"] == "input_image"]
    assert [p["detail"] for p in images] == ["auto", "auto", "low"]  # newest first
    said = listed["data"][1]["content"][0]  # an assistant's input_text, listed as OpenAI lists its text
    assert said["type"] == "output_text" and said["text"] == "said before"
    conforms("ConversationItemList", json_of(client.conversations.items.with_raw_response.list(conv)))
    added = client.conversations.items.with_raw_response.create(conv, items=[{"role": "user", "content": [image]}])
    assert conforms("ConversationItemList", json_of(added))["data"][0]["content"][0]["detail"] == "auto"
    error = refused(
        400,
        lambda: client.responses.create(
            model="gpt", input=[{"role": "user", "content": [{**image, "detail": "huge"}]}]
        ),
    )
    assert error["param"] == "input[0].content[0].detail"
    # A part its role's listed item cannot hold (OpenAI's input messages take input parts, its assistant
    # messages output_text and refusal): stored, it would be listed outside the schema.
    text, refusal = {"type": "output_text", "text": "x"}, {"type": "refusal", "refusal": "x"}
    for role, part in [("user", text), ("system", refusal), ("developer", text), ("assistant", image)]:
        message = {"role": role, "content": [{"type": "input_text", "text": "first"}, part]}
        error = refused(400, lambda m=message: client.responses.create(model="gpt", input=[m]))
        assert error["param"] == "input[0].content[1].type", error
        error = refused(400, lambda m=message: client.conversations.items.create(conv, items=[m]))
        assert error["param"] == "items[0].content[1].type", error
    call = {"type": "function_call", "call_id": "call_parts", "name": "get_weather", "arguments": "{}"}
    answer = {"type": "function_call_output", "call_id": "call_parts", "output": [image]}
    made = client.responses.create(model="gpt", input=[call, answer], tools=[WEATHER])
    listed = conforms("ResponseItemList", json_of(client.responses.input_items.with_raw_response.list(made.id)))
    assert listed["data"][0]["output"][0]["detail"] == "auto"
    for part in (text, refusal):
        error = refused(
            400, lambda p=part: client.responses.create(model="gpt", input=[call, {**answer, "output": [p]}])
        )
        assert error["param"] == "input[1].output[0].type", error


# -- a hostile client ------------------------------------------------------------------------------------


def refused(status: int, do) -> dict:
    """`do()` raises the SDK's error for `status`, with a body in OpenAI's error shape."""
    with pytest.raises(openai.APIStatusError) as caught:
        do()
    assert caught.value.status_code == status, caught.value.response.text
    return conforms("ErrorResponse", caught.value.response.json())["error"]


def test_another_tenants_ids_and_ids_of_the_wrong_kind_are_not_found(world):
    mine, theirs = world.sdk("acme"), world.sdk("globex")
    their_resp = theirs.responses.create(model="gpt", input="globex's secret", background=True)
    their_conv = theirs.conversations.create(items=[{"type": "message", "role": "user", "content": "globex's"}])
    their_item = theirs.conversations.items.list(their_conv.id).data[0].id
    my_conv = mine.conversations.create()
    my_resp = mine.responses.create(model="gpt", input="acme's")
    for do in (
        lambda: mine.responses.retrieve(their_resp.id),
        lambda: mine.responses.input_items.list(their_resp.id),
        lambda: mine.responses.cancel(their_resp.id),
        lambda: mine.responses.delete(their_resp.id),
        lambda: mine.responses.retrieve(their_resp.id, stream=True, starting_after=0),
        lambda: mine.conversations.retrieve(their_conv.id),
        lambda: mine.conversations.update(their_conv.id, metadata={"x": "y"}),
        lambda: mine.conversations.delete(their_conv.id),
        lambda: mine.conversations.items.list(their_conv.id),
        lambda: mine.conversations.items.retrieve(their_item, conversation_id=their_conv.id),
        lambda: mine.conversations.items.delete(their_item, conversation_id=their_conv.id),
        lambda: mine.conversations.items.create(their_conv.id, items=[{"role": "user", "content": "x"}]),
        lambda: mine.conversations.items.retrieve(their_item, conversation_id=my_conv.id),
        lambda: mine.responses.create(model="gpt", input="x", conversation=their_conv.id),
        lambda: mine.responses.retrieve(my_conv.id),  # a conversation id where a response id goes
        lambda: mine.conversations.retrieve(my_resp.id),  # and the other way round
        lambda: mine.responses.create(model="gpt", input="x", conversation=my_resp.id),
    ):
        error = refused(404, do)
        assert "globex's" not in json.dumps(error)
    for prev in (their_resp.id, my_conv.id):
        error = refused(400, lambda: mine.responses.create(model="gpt", input="x", previous_response_id=prev))
        assert error["param"] == "previous_response_id"
    # Nothing of theirs was touched.
    assert theirs.responses.retrieve(their_resp.id).id == their_resp.id
    assert [i.id for i in theirs.conversations.items.list(their_conv.id).data] == [their_item]


def test_a_function_call_output_without_its_call_is_refused_and_never_stored(world):
    """OpenAI answers 400 when a function_call_output answers no call; stored in a conversation, such a
    result alone would be sent with every later turn, and every provider refuses a tool result without
    its call. The same output after its call is accepted, in one input or across turns."""
    client = world.sdk()
    orphan = {"type": "function_call_output", "call_id": "call_nowhere", "output": "42"}
    error = refused(400, lambda: client.responses.create(model="gpt", input=[orphan]))
    assert error["param"] == "input[0]" and "call_nowhere" in error["message"]

    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}]).id
    before = [i.id for i in client.conversations.items.list(conv).data]
    refused(400, lambda: client.responses.create(model="gpt", conversation=conv, input=[orphan]))
    error = refused(400, lambda: client.conversations.items.create(conv, items=[orphan]))
    assert error["param"] == "items[0]"
    refused(400, lambda: client.conversations.create(items=[orphan]))
    assert [i.id for i in client.conversations.items.list(conv).data] == before  # nothing was appended
    assert client.responses.create(model="gpt", input="still fine", conversation=conv).status == "completed"

    call = {"type": "function_call", "call_id": "call_here", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
    answer = {"type": "function_call_output", "call_id": "call_here", "output": "cold"}
    assert client.responses.create(model="gpt", input=[call, answer], tools=[WEATHER]).status == "completed"
    client.conversations.items.create(conv, items=[call])
    client.conversations.items.create(conv, items=[answer])  # answers the call stored before
    first = client.responses.create(model="gpt", input="Weather in Rome?", tools=[WEATHER])
    call_id = next(i for i in first.output if i.type == "function_call").call_id
    done = client.responses.create(
        model="gpt",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call_id, "output": "warm"}],
    )
    assert done.status == "completed"


def test_a_background_response_still_running_cannot_be_continued_yet(world):
    """Its answer is not stored yet: a turn continuing it would be served half the context (was a 200 whose
    model never saw the first answer). A 400 saying so; once it is final, the chain goes on."""
    client = world.sdk()
    world.sims["oa"].fault(latency_ms=1500)
    first = client.responses.create(model="gpt", input="the code word is osprey", background=True)
    error = refused(400, lambda: client.responses.create(model="claude", input="which?", previous_response_id=first.id))
    assert error["param"] == "previous_response_id" and error["code"] == "previous_response_in_progress"
    world.sims["oa"].clear_faults()
    done = until(lambda: (r := client.responses.retrieve(first.id)).status == "completed" and r, 30, "completion")
    after = client.responses.create(model="claude", input="which?", previous_response_id=first.id)
    assert after.status == "completed"
    assert done.output_text in json.dumps(json.loads(world.sims["an"].requests()[-1]["body"]))


@pytest.mark.parametrize("mode", [{}, {"stream": True}, {"background": True}])
def test_an_item_id_already_in_the_conversation_is_refused_before_any_upstream_call(world, mode):
    """Was: the model was called, then storing the turn hit the unique id (a 400 with the answer lost;
    a background job failing at its final write and calling the upstream on each of its attempts)."""
    client = world.sdk()
    taken = {"type": "message", "id": "msg_taken", "role": "user", "content": "first"}
    conv = client.conversations.create(items=[taken]).id
    calls = len(world.sims["oa"].requests())
    error = refused(400, lambda: client.responses.create(model="gpt", conversation=conv, input=[taken], **mode))
    assert error["code"] == "duplicate_item_id" and error["param"] == "input[0].id"
    twice = [{**taken, "id": "msg_new"}, {**taken, "id": "msg_new"}]
    refused(400, lambda: client.responses.create(model="gpt", conversation=conv, input=twice, **mode))
    assert len(world.sims["oa"].requests()) == calls  # no upstream call was made
    assert [i.id for i in client.conversations.items.list(conv).data] == ["msg_taken"]
    error = refused(400, lambda: client.responses.create(model="gpt", input=[{**taken, "id": "msg_\x00"}], **mode))
    assert error["param"] == "input[0].id"  # a NUL is no id (PostgreSQL's text refuses it)


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"include": ["no.such.thing"]}, "include"),
        ({"truncation": "sometimes"}, "truncation"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": -5}, "max_output_tokens"),
        ({"background": True, "store": False}, "background"),
        ({"input": [{"type": "no_such_item"}]}, "input[0].type"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        # A field inside the request's objects that nobody defines: refused, not silently dropped (was a 200).
        ({"text": {"verbosity": "low", "verbose": True}}, "text.verbose"),
        (
            {"text": {"format": {"type": "json_schema", "name": "n", "schema": {}, "strictly": True}}},
            "text.format.strictly",
        ),
        ({"reasoning": {"effort": "low", "budget": 5}}, "reasoning.budget"),
        ({"stream": True, "stream_options": {"include_usage": True}}, "stream_options.include_usage"),
        ({"conversation": {"id": "conv_x", "name": "mine"}}, "conversation.name"),
        ({"service_tier": "turbo"}, "service_tier"),  # was echoed: a Response outside OpenAI's enum
        ({"prompt_cache_retention": "forever"}, "prompt_cache_retention"),
    ],
)
def test_bad_requests_are_a_clear_400(world, extra, param):
    error = refused(400, lambda: world.sdk().responses.create(**{"model": "gpt", "input": "x", **extra}))
    assert error["param"].startswith(param.split("[")[0]), error


def test_openai_fields_inside_reasoning_are_taken_and_reported_as_not_sent(world):
    raw = world.sdk().responses.with_raw_response.create(
        model="claude", input="x", reasoning={"effort": "low", "context": "auto", "mode": "standard"}
    )
    assert conforms("Response", json_of(raw))["status"] == "completed"
    dropped = raw.headers["x-multihome-dropped-params"].split(",")
    assert {"reasoning.context", "reasoning.mode"} <= {d.strip() for d in dropped}


def test_conversation_with_previous_response_id_is_refused(world):
    client = world.sdk()
    prev = client.responses.create(model="gpt", input="one")
    conv = client.conversations.create()
    error = refused(
        400, lambda: client.responses.create(model="gpt", input="x", previous_response_id=prev.id, conversation=conv.id)
    )
    assert error["param"] in ("conversation", "previous_response_id")
    assert client.conversations.items.list(conv.id).data == []


def test_control_characters_and_astral_text_round_trip(world):
    client = world.sdk()
    text = "nul \x00 bell \x07 rtl \u202e emoji 😀 nonchar \uffff"
    resp = client.responses.create(model="gpt", input=text)
    items = client.responses.input_items.list(resp.id).data
    assert items[0].content[0].text == text
    body = client.responses.with_raw_response.retrieve(resp.id).http_response.json()
    conforms("Response", body)


# Requests OpenAI's schema allows, each with something less common in it: served, with a Response in the
# published shape, or refused as unsupported by a 400 naming the parameter (docs/responses.md).
TRIP = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
ALLOWED = {
    "nulls": {
        "instructions": None,
        "previous_response_id": None,
        "conversation": None,
        "temperature": None,
        "top_p": None,
        "max_output_tokens": None,
        "metadata": None,
        "include": None,
        "truncation": None,
        "reasoning": None,
        "store": None,
        "parallel_tool_calls": None,
    },
    "metadata, store, truncation": {"metadata": {"team": "conformance"}, "store": True, "truncation": "auto"},
    "include": {"include": ["reasoning.encrypted_content", "message.input_image.image_url"]},
    "reasoning": {"reasoning": {"effort": "low", "summary": "auto"}},
    "text json_schema and verbosity": {
        "input": "Plan a trip",
        "text": {"format": {"type": "json_schema", "name": "trip", "schema": TRIP, "strict": True}, "verbosity": "low"},
    },
    "text json_object": {"input": "Describe Oslo as JSON", "text": {"format": {"type": "json_object"}}},
    "text plain": {"text": {"format": {"type": "text"}}},
    "max_output_tokens at OpenAI's minimum": {"max_output_tokens": 16},
    "max_tool_calls": {"max_tool_calls": 2, "tools": [WEATHER]},
    "tool_choice required": {"input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"},
    "tool_choice named": {
        "input": "Weather in Paris?",
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": WEATHER["name"]},
    },
    "tool_choice none": {"tools": [WEATHER], "tool_choice": "none"},
    "parallel_tool_calls false": {"input": "Weather in Paris?", "tools": [WEATHER], "parallel_tool_calls": False},
    "caller ids": {
        "user": "u-1",
        "safety_identifier": "s-1",
        "prompt_cache_key": "k-1",
        "prompt_cache_retention": "24h",
    },
    "service_tier auto": {"service_tier": "auto"},
    "top_logprobs 0": {"top_logprobs": 0},
    "temperature and top_p": {"temperature": 0.2, "top_p": 0.9},
    "instructions": {"instructions": "Be brief."},
}


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_less_common_requests_openai_allows_are_served_in_the_published_shape(world, model):
    client, failures = world.sdk(), []
    for name, extra in ALLOWED.items():
        body = {"model": model, "input": "hello", **extra}
        assert not problems("CreateResponse", body), (name, problems("CreateResponse", body))
        try:
            found = problems("Response", json_of(client.responses.with_raw_response.create(**body)))
            failures += [f"{name}: {p}" for p in found[:3]]
        except openai.APIStatusError as exc:
            error = exc.response.json().get("error") or {}
            if exc.status_code != 400 or error.get("code") != "unsupported_parameter" or not error.get("param"):
                failures.append(f"{name}: HTTP {exc.status_code} {exc.response.text[:300]}")
    assert not failures, "\n".join(failures)


def test_pages_of_items_keep_to_the_published_list_shape(world):
    """`limit`, `order` and `after` on a response's input items and a conversation's items: each page in
    the published list shape, its `first_id`/`last_id` those of its data, `has_more` whether more follow."""
    client = world.sdk()
    conv = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": f"item {i}"} for i in range(5)]
    ).id
    made = client.responses.create(
        model="gpt", input=[{"role": "user", "content": f"line {i}"} for i in range(5)], store=True
    )
    for name, lister in (
        ("ConversationItemList", lambda **q: client.conversations.items.with_raw_response.list(conv, **q)),
        ("ResponseItemList", lambda **q: client.responses.input_items.with_raw_response.list(made.id, **q)),
    ):
        everything = conforms(name, json_of(lister(order="asc", limit=100)))
        ids = [i["id"] for i in everything["data"]]
        assert len(ids) == 5 and not everything["has_more"]
        for order, expected in (("asc", ids), ("desc", ids[::-1])):
            seen, after = [], None
            while True:
                query = {"order": order, "limit": 2, **({"after": after} if after else {})}
                got = conforms(name, json_of(lister(**query)))
                page = [i["id"] for i in got["data"]]
                assert (got["first_id"], got["last_id"]) == (page[0], page[-1]), got
                seen += page
                assert got["has_more"] == (len(seen) < 5), (order, got)
                if not got["has_more"]:
                    break
                after = got["last_id"]
            assert seen == expected, (name, order)
        # Past the end: an empty page, its ids null as OpenAI's lists answer (the SDK's types say str, and
        # its parsing takes the null: checked against the schema, as openai_schemas.py patches it, not strictly).
        past = json_of(lister(order="asc", after=ids[-1]))
        assert past == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_a_conversations_metadata_can_be_set_to_null(world):
    """OpenAI's UpdateConversationBody requires `metadata` but allows null (the SDK's `update(id, metadata=None)`):
    it clears the metadata. Was a 400 (the field was typed as an object)."""
    client = world.sdk()
    conv = client.conversations.create(metadata={"topic": "demo"}).id
    cleared = conforms(
        "ConversationResource", json_of(client.conversations.with_raw_response.update(conv, metadata=None))
    )
    assert cleared["metadata"] == {}
    assert client.conversations.retrieve(conv).metadata == {}
    error = refused(400, lambda: client.conversations.update(conv, extra_body={}, metadata=openai.omit))
    assert error["param"] == "metadata"


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_reasoning_items_and_their_summary_events_keep_to_the_published_schema(world, model):
    client = world.sdk()
    body = {"model": model, "input": "Hello there", "reasoning": {"effort": "low", "summary": "auto"}}
    made = conforms("Response", json_of(client.responses.with_raw_response.create(**body)))
    types = {e["type"] for e in streamed(client, **body)}
    if model == "claude":  # its thinking, as a reasoning item with a summary
        assert "reasoning" in {i["type"] for i in made["output"]}
        assert {"response.reasoning_summary_part.added", "response.reasoning_summary_text.delta"} <= types


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_max_output_tokens_below_openais_minimum_is_a_400_whichever_deployment_serves(world, model):
    """OpenAI's schema sets `max_output_tokens` >= 16. Was: refused by a native upstream (its own 400),
    served by a translated one; now the gateway's 400 naming it, before any upstream call."""
    client = world.sdk()
    assert problems("CreateResponse", {"model": model, "input": "x", "max_output_tokens": 15})
    calls = {name: len(sim.requests()) for name, sim in world.sims.items()}
    error = refused(400, lambda: client.responses.create(model=model, input="x", max_output_tokens=15))
    assert error["param"] == "max_output_tokens" and "16" in error["message"]
    assert {name: len(sim.requests()) for name, sim in world.sims.items()} == calls
    assert client.responses.create(model=model, input="x", max_output_tokens=16).status in ("completed", "incomplete")


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"safety_identifier": "s" * 65}, "safety_identifier"),
        ({"reasoning": {"effort": "low", "context": "forever"}}, "reasoning.context"),
    ],
)
def test_what_openais_schema_refuses_is_refused_on_a_translated_turn_too(world, extra, param):
    """A native upstream refuses these itself; a translated one was sent the call (the field dropped or
    cut). The gateway's 400 naming it, before any upstream call."""
    body = {"model": "claude", "input": "x", **extra}
    assert problems("CreateResponse", body)
    calls = len(world.sims["an"].requests())
    assert refused(400, lambda: world.sdk().responses.create(**body))["param"] == param
    assert len(world.sims["an"].requests()) == calls
