"""The conformance scenarios of the Responses API (`client.responses`), one row each per provider kind.

Every scenario but one is stateless: a multi-step exchange sends its earlier items again as input, as a
client with `store: false` does. `responses_stored` keeps its state in the gateway's store (the matrix's
gateway has one): a chain continued by `previous_response_id` and a conversation, each checked in what the
provider was sent (deeper, per kind: tests/e2e/test_responses*.py). Kinds whose API has a Responses API (`NATIVE`) are called on it with
`store: false`; the others through the canonical chat path (docs/responses.md); each scenario checks
which, from the simulator's record.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from .scenarios import ARGS, PNG, Ctx, scenario

NATIVE = frozenset({"openai", "azure"})  # docs/responses.md "Native upstreams"
TOOLS = [
    {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]},
    }
    for name, description, arg in (("get_weather", "Weather in a city", "city"), ("get_time", "Local time", "tz"))
]


def _wire(ctx: Ctx) -> dict:
    """The last request the provider's simulator received: checks the wire form, returns the body."""
    sent = ctx.sim.requests()[-1]
    native = sent["path"].split("?")[0].endswith("/responses")
    assert native == (ctx.target.name in NATIVE), sent["path"]
    body = json.loads(sent["body"]) if sent["body"].startswith("{") else {}
    if native:
        assert body["store"] is False
    return body


def _calls(response) -> list[tuple[str, dict]]:
    return [(i.name, json.loads(i.arguments)) for i in response.output if i.type == "function_call"]


@scenario("responses: plain text")
def responses_plain(ctx: Ctx) -> None:
    reply = ctx.client.responses.create(model=ctx.model, input="Hello there", instructions="Be brief.")
    assert reply.object == "response" and reply.status == "completed" and reply.output_text == ctx.hello
    assert reply.model == ctx.model and reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    _wire(ctx)


@scenario("responses: streaming text")
def responses_stream(ctx: Ctx) -> None:
    with ctx.client.responses.stream(model=ctx.model, input="Hello there") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ctx.hello
    assert final.output_text == ctx.hello and final.usage.output_tokens > 0
    _wire(ctx)


@scenario("responses: function call and its output")
def responses_tool_round_trip(ctx: Ctx) -> None:
    question = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = ctx.client.responses.create(model=ctx.model, input=question, tools=TOOLS, store=False)
    assert _calls(first) == [("get_weather", ARGS["get_weather"])]
    call = next(i for i in first.output if i.type == "function_call")
    items = [*question, *[i.model_dump(exclude_none=True) for i in first.output]]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny-and-42"})
    final = ctx.client.responses.create(model=ctx.model, input=items, tools=TOOLS, store=False)
    assert not _calls(final) and "sunny-and-42" in final.output_text, final.output_text
    _wire(ctx)


@scenario("responses: parallel function calls")
def responses_parallel_calls(ctx: Ctx) -> None:
    reply = ctx.client.responses.create(
        model=ctx.model, input="Weather and time, in parallel please", tools=TOOLS, parallel_tool_calls=True
    )
    assert _calls(reply) == [("get_weather", ARGS["get_weather"]), ("get_time", ARGS["get_time"])]
    assert len({i.call_id for i in reply.output if i.type == "function_call"}) == 2
    assert _wire(ctx).get("parallel_tool_calls", True) is True


@scenario("responses: tool_choice named")
def responses_tool_choice(ctx: Ctx) -> None:
    reply = ctx.client.responses.create(
        model=ctx.model,
        input="Weather and time, in parallel please",
        tools=TOOLS,
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert _calls(reply) == [("get_time", ARGS["get_time"])]


@scenario("responses: text.format json_schema")
def responses_json_schema(ctx: Ctx) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    reply = ctx.client.responses.create(
        model=ctx.model,
        input="Plan a trip",
        text={"format": {"type": "json_schema", "name": "trip", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(reply.output_text), schema)
    assert reply.text.format.type == "json_schema"


@scenario("responses: image input (data URL)")
def responses_image(ctx: Ctx) -> None:
    reply = ctx.client.responses.create(
        model=ctx.model,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": PNG},
                ],
            }
        ],
    )
    assert reply.output_text.endswith("I see 1 image(s)."), reply.output_text


@scenario("responses: max_output_tokens -> incomplete")
def responses_incomplete(ctx: Ctx) -> None:
    reply = ctx.client.responses.create(model=ctx.model, input="Hello there " + "and more " * 40, max_output_tokens=16)
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output_text and reply.usage.output_tokens <= 16


def _effort_sent(body: dict) -> object:
    """The effort `low` as the upstream's own API carries it (docs/translation/reasoning.md), or None."""
    thinking = body.get("thinking") or (body.get("additionalModelRequestFields") or {}).get("thinking")
    if thinking is not None:
        return thinking.get("budget_tokens")  # Claude: a thinking budget
    if "generationConfig" in body:
        return body["generationConfig"].get("thinkingConfig")  # Gemini
    return body.get("reasoning_effort")  # OpenAI-compatible chat


@scenario("responses: reasoning settings and a reasoning item (sent natively or in the upstream's form)")
def responses_reasoning(ctx: Ctx) -> None:
    raw = ctx.client.responses.with_raw_response.create(
        model=ctx.model, input="Hello there", reasoning={"effort": "low", "summary": "auto"}
    )
    reply = raw.parse()
    assert reply.status == "completed" and reply.reasoning.effort == "low"
    body = _wire(ctx)
    dropped = raw.headers.get("x-multihome-dropped-params", "")
    assert "reasoning" not in dropped, dropped
    if ctx.target.name in NATIVE:  # sent as asked, with the encrypted reasoning asked back
        assert body["reasoning"] == {"effort": "low", "summary": "auto"}
        assert body["include"] == ["reasoning.encrypted_content"]
        return
    sent = _effort_sent(body)
    assert sent in (1024, {"thinkingBudget": 1024, "includeThoughts": True}, "low"), body
    if sent != "low":  # Claude's thinking and Gemini's thoughts come back as the reasoning item's summary
        assert reply.output[0].type == "reasoning" and "Hello there" in reply.output[0].summary[0].text


def _sent_holds(ctx: Ctx, *texts: str) -> None:
    """The provider's last request carries each text (the earlier turns rebuilt from the store), in whatever
    form its API takes them (JSON strings, so a text is looked for as JSON escapes it)."""
    body = ctx.sim.requests()[-1]["body"]
    for text in texts:
        assert json.dumps(text)[1:-1] in body, (text, body[:2000])


@scenario("responses: stored, continued by previous_response_id and in a conversation (state in the gateway)")
def responses_stored(ctx: Ctx) -> None:
    c = ctx.client
    first = c.responses.create(model=ctx.model, input="Remember the number seven.")
    assert first.status == "completed" and first.store is True and first.output_text
    second = c.responses.create(model=ctx.model, input="Which number?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text
    _sent_holds(ctx, "Remember the number seven.", first.output_text, "Which number?")
    with c.responses.stream(model=ctx.model, input="Once more.", previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert third.status == "completed" and third.output_text
    _sent_holds(ctx, "Remember the number seven.", second.output_text, "Once more.")
    assert c.responses.retrieve(second.id).output_text == second.output_text
    items = c.responses.input_items.list(second.id, order="asc").data
    assert [i.content[0].text for i in items if i.type == "message"] == ["Which number?"]

    conv = c.conversations.create(items=[{"type": "message", "role": "user", "content": "My name is Ada."}])
    in_conv = c.responses.create(model=ctx.model, input="What is my name?", conversation=conv.id)
    assert in_conv.output_text
    _sent_holds(ctx, "My name is Ada.", "What is my name?")
    listed = c.conversations.items.list(conv.id, order="asc").data
    assert [i.role for i in listed if i.type == "message"] == ["user", "user", "assistant"]

    assert c.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)
    assert c.conversations.delete(conv.id).deleted
