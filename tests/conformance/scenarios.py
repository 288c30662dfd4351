"""The conformance scenarios: what an application written against OpenAI's chat API relies on.

Each scenario is a small function that drives the running gateway with the official `openai` SDK
for one provider (`Ctx`) and returns on success or raises (an assertion or an SDK error). The
simulators answer deterministically (docs/simulators.md), so the expected texts are exact.
Faults are set through the simulators' run-time `/_sim/faults` table with `match`, so a fault hits
only the deployment it is meant for.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema
import openai
import pytest

from e2e.processes import Simulator

from .providers import BACKUP_NAME, Target


@dataclass
class Ctx:
    client: openai.OpenAI
    target: Target
    sim: Simulator  # the provider's simulator
    backup: Simulator  # the OpenAI simulator behind every `<name>-fo` group

    @property
    def model(self) -> str:
        return self.target.name

    @property
    def hello(self) -> str:
        return f"Hello from {self.target.sim_name}. You said: Hello there"


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    run: Callable[[Ctx], None]


SCENARIOS: dict[str, Scenario] = {}


def scenario(title: str):
    def register(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        SCENARIOS[fn.__name__] = Scenario(fn.__name__, title, fn)
        return fn

    return register


HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a timezone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}
TOOLS = [WEATHER, TIME]
ARGS = {"get_weather": {"city": "example"}, "get_time": {"tz": "example"}}  # the simulators' schema examples
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n conformance").decode()
SYSTEM_TEXT = "You answer in one short sentence and never use lists. " * 8  # ~110 tokens


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def outcomes(headers) -> list[tuple[str, str]]:
    items = [part.split(";") for part in headers["x-multihome-attempts"].split(", ")]
    return [(item[0], item[1].removeprefix("outcome=")) for item in items]


def collect(stream) -> dict:
    """Everything a client reassembles from a chunk stream, checking the framing as it goes."""
    text, calls, finishes, usage, roles, ids = [], {}, [], None, [], set()
    chunks = 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk"
        ids.add(chunk.id)
        if chunk.usage is not None:
            assert chunk.choices == [], "usage arrives on its own chunk with empty choices"
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                roles.append(delta.role)
            text.append(delta.content or "")
            for tc in delta.tool_calls or ():
                if tc.index not in calls:
                    # The first fragment of a call carries its id and name.
                    assert tc.id and tc.function and tc.function.name, f"first fragment of call {tc.index}: {tc}"
                    calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
                else:
                    assert not tc.id or tc.id == calls[tc.index]["id"]
                calls[tc.index]["arguments"] += (tc.function.arguments or "") if tc.function else ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert len(ids) == 1, f"every chunk of a stream has the same id, got {ids}"
    return {
        "text": "".join(text),
        "calls": calls,
        "finishes": finishes,
        "usage": usage,
        "roles": roles,
        "chunks": chunks,
    }


# -- messages ---------------------------------------------------------------------------------


@scenario("plain chat")
def plain_chat(ctx: Ctx) -> None:
    raw = ctx.client.chat.completions.with_raw_response.create(model=ctx.model, messages=HELLO)
    reply = raw.parse()
    assert raw.headers["x-multihome-deployment"] == f"{ctx.model}-main"
    assert reply.object == "chat.completion" and reply.id
    assert len(reply.choices) == 1 and reply.choices[0].index == 0
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == ctx.hello
    assert reply.choices[0].finish_reason == "stop"


def _prompt_tokens_grow_with(ctx: Ctx, role: str) -> None:
    base = ctx.client.chat.completions.create(model=ctx.model, messages=HELLO)
    reply = ctx.client.chat.completions.create(
        model=ctx.model, messages=[{"role": role, "content": SYSTEM_TEXT}, *HELLO]
    )
    assert reply.choices[0].message.content == ctx.hello
    # The instruction reached the provider: it is billed as prompt tokens (~110 of them).
    assert reply.usage.prompt_tokens >= base.usage.prompt_tokens + 80, (base.usage, reply.usage)


@scenario("system prompt")
def system_prompt(ctx: Ctx) -> None:
    _prompt_tokens_grow_with(ctx, "system")


@scenario("developer message")
def developer_message(ctx: Ctx) -> None:
    _prompt_tokens_grow_with(ctx, "developer")


@scenario("multi-turn conversation")
def multi_turn(ctx: Ctx) -> None:
    history = [
        {"role": "user", "content": "My name is Ada and I like long walks by the sea."},
        {"role": "assistant", "content": "Nice to meet you, Ada. Walks by the sea sound lovely."},
        {"role": "user", "content": "What is my name?"},
    ]
    single = ctx.client.chat.completions.create(model=ctx.model, messages=history[-1:])
    reply = ctx.client.chat.completions.create(model=ctx.model, messages=history)
    assert reply.choices[0].message.content == f"Hello from {ctx.target.sim_name}. You said: What is my name?"
    assert reply.usage.prompt_tokens >= single.usage.prompt_tokens + 20, "earlier turns reached the provider"


# -- tools ------------------------------------------------------------------------------------


def _calls(message) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or ()]


@scenario("single tool call")
def tool_call(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(
        model=ctx.model, messages=ask("What is the weather in Oslo?"), tools=TOOLS
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert _calls(choice.message) == [("get_weather", ARGS["get_weather"])]
    assert choice.message.tool_calls[0].id and choice.message.tool_calls[0].type == "function"


@scenario("parallel tool calls")
def parallel_tool_calls(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(
        model=ctx.model, messages=ask("Weather and time, in parallel please"), tools=TOOLS
    )
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert _calls(reply.choices[0].message) == [("get_weather", ARGS["get_weather"]), ("get_time", ARGS["get_time"])]
    assert len({c.id for c in calls}) == 2, "each call has its own id"


@scenario("tool result round trip")
def tool_result_round_trip(ctx: Ctx) -> None:
    question = ask("What is the weather in Oslo?")
    first = ctx.client.chat.completions.create(model=ctx.model, messages=question, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *question,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny-and-42"},
    ]
    final = ctx.client.chat.completions.create(model=ctx.model, messages=messages, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    # The simulators answer "Tool <id or name> returned: <the result as the provider received it>".
    content = final.choices[0].message.content
    assert content.startswith("Tool ") and "sunny-and-42" in content, content


@scenario("tool_choice: named function")
def tool_choice_named(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(
        model=ctx.model,
        messages=ask("Weather and time, in parallel please"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert _calls(reply.choices[0].message) == [("get_time", ARGS["get_time"])]


@scenario("tool_choice: none")
def tool_choice_none(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(model=ctx.model, messages=HELLO, tools=TOOLS, tool_choice="none")
    assert not reply.choices[0].message.tool_calls
    assert reply.choices[0].message.content == ctx.hello and reply.choices[0].finish_reason == "stop"


@scenario("tool_choice: required")
def tool_choice_required(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(model=ctx.model, messages=HELLO, tools=TOOLS, tool_choice="required")
    calls = _calls(reply.choices[0].message)
    assert calls and all(name in ARGS and args == ARGS[name] for name, args in calls), calls


# -- content and output controls --------------------------------------------------------------


def _image(ctx: Ctx, url: str) -> None:
    reply = ctx.client.chat.completions.create(
        model=ctx.model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content.endswith("I see 1 image(s)."), reply.choices[0].message.content


@scenario("image (data URL)")
def image_data_url(ctx: Ctx) -> None:
    _image(ctx, PNG)


@scenario("image (https URL)")
def image_https_url(ctx: Ctx) -> None:
    _image(ctx, "https://example.com/cat.png")


@scenario("response_format: json_object")
def json_object(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(
        model=ctx.model, messages=ask("Describe Oslo as JSON"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    assert reply.choices[0].finish_reason == "stop"


@scenario("response_format: json_schema")
def json_schema(ctx: Ctx) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "minimum": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        },
        "required": ["city", "days", "tags"],
        "additionalProperties": False,
    }
    reply = ctx.client.chat.completions.create(
        model=ctx.model,
        messages=ask("Plan a trip"),
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    assert reply.choices[0].finish_reason == "stop"


@scenario("stop sequence")
def stop_sequence(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(model=ctx.model, messages=HELLO, stop=["You said"])
    assert reply.choices[0].message.content == f"Hello from {ctx.target.sim_name}. "
    assert reply.choices[0].finish_reason == "stop"


@scenario("max_tokens -> finish length")
def max_tokens_length(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(model=ctx.model, messages=HELLO, max_tokens=3)
    content = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert content and ctx.hello.startswith(content) and len(content) < len(ctx.hello), content
    assert reply.usage.completion_tokens <= 3


@scenario("temperature / top_p accepted")
def sampling_params(ctx: Ctx) -> None:
    raw = ctx.client.chat.completions.with_raw_response.create(
        model=ctx.model, messages=HELLO, temperature=0.4, top_p=0.9
    )
    assert raw.parse().choices[0].message.content == ctx.hello
    dropped = raw.headers.get("x-multihome-dropped-params", "")
    assert "temperature" not in dropped and "top_p" not in dropped, dropped


# -- streaming and usage ----------------------------------------------------------------------


@scenario("streaming text")
def stream_text(ctx: Ctx) -> None:
    got = collect(ctx.client.chat.completions.create(model=ctx.model, messages=HELLO, stream=True))
    assert got["roles"] == ["assistant"]
    assert got["text"] == ctx.hello
    assert got["finishes"] == ["stop"] and got["usage"] is None and not got["calls"]
    assert got["chunks"] >= 3, "text arrives in pieces, not as one chunk"


@scenario("streaming tool calls")
def stream_tool_call(ctx: Ctx) -> None:
    got = collect(
        ctx.client.chat.completions.create(
            model=ctx.model, messages=ask("Weather and time, in parallel please"), tools=TOOLS, stream=True
        )
    )
    calls = got["calls"]
    assert sorted(calls) == [0, 1], f"tool-call indices count from 0: {sorted(calls)}"
    assert [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in (0, 1)] == [
        ("get_weather", ARGS["get_weather"]),
        ("get_time", ARGS["get_time"]),
    ]
    assert calls[0]["id"] != calls[1]["id"]
    assert got["finishes"] == ["tool_calls"]


@scenario("usage in streams (include_usage)")
def stream_usage(ctx: Ctx) -> None:
    unary = ctx.client.chat.completions.create(model=ctx.model, messages=HELLO)
    got = collect(
        ctx.client.chat.completions.create(
            model=ctx.model, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = got["usage"]
    assert usage is not None, "a usage chunk with empty choices ends the stream"
    assert (usage.prompt_tokens, usage.completion_tokens) == (unary.usage.prompt_tokens, unary.usage.completion_tokens)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@scenario("usage (non-stream, cached_tokens present)")
def usage_non_stream(ctx: Ctx) -> None:
    raw = ctx.client.chat.completions.with_raw_response.create(model=ctx.model, messages=HELLO)
    usage = json.loads(raw.content)["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert isinstance(usage["prompt_tokens_details"]["cached_tokens"], int), usage


@scenario("reasoning_effort (in the upstream's form; reasoning and its tokens back)")
def reasoning(ctx: Ctx) -> None:
    reply = ctx.client.chat.completions.create(model=ctx.model, messages=HELLO, reasoning_effort="low")
    sent = json.loads(ctx.sim.requests()[-1]["body"])
    msg, details = reply.choices[0].message, reply.usage.completion_tokens_details
    thinking = sent.get("thinking") or (sent.get("additionalModelRequestFields") or {}).get("thinking")
    if thinking is not None:  # Claude, on any path: a thinking budget; its thinking back as reasoning_content
        assert thinking == {"type": "enabled", "budget_tokens": 1024}, sent
        assert "Hello there" in msg.reasoning_content and msg.thinking_blocks[0]["signature"]
    elif "generationConfig" in sent:  # Gemini: thinkingConfig; its thoughts and their count back
        assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
        assert "Hello there" in msg.reasoning_content and details.reasoning_tokens > 0
    else:  # OpenAI-compatible: passed through; the model's hidden reasoning tokens are reported
        assert sent["reasoning_effort"] == "low" and details.reasoning_tokens > 0, sent
    assert "Hello there" in msg.content and reply.usage.completion_tokens > (details.reasoning_tokens if details else 0)


# -- agents -----------------------------------------------------------------------------------


def _turn(ctx: Ctx, messages: list[dict], stream: bool, **extra) -> tuple[str | None, list[dict]]:
    """One model call: (text, tool calls as assistant-message dicts)."""
    if not stream:
        msg = (
            ctx.client.chat.completions.create(model=ctx.model, messages=messages, tools=TOOLS, **extra)
            .choices[0]
            .message
        )
        return msg.content, [c.model_dump(include={"id", "type", "function"}) for c in msg.tool_calls or ()]
    got = collect(
        ctx.client.chat.completions.create(model=ctx.model, messages=messages, tools=TOOLS, stream=True, **extra)
    )
    calls = [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for _, c in sorted(got["calls"].items())
    ]
    return got["text"] or None, calls


def _agent(ctx: Ctx, stream: bool) -> None:
    """Three tasks; for each the model calls tools, the agent runs them and the model answers from
    the results. The history grows, so later requests replay every earlier tool turn."""
    messages: list[dict] = [{"role": "system", "content": "You are an agent with tools."}]
    script = [
        ("What is the weather in Oslo?", {}, ["get_weather"]),
        ("Now weather and time, in parallel", {}, ["get_weather", "get_time"]),
        ("And just the time", {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, ["get_time"]),
    ]
    for step, (question, extra, expected) in enumerate(script):
        messages.append({"role": "user", "content": question})
        text, calls = _turn(ctx, messages, stream, **extra)
        assert [c["function"]["name"] for c in calls] == expected, (step, calls)
        assert len({c["id"] for c in calls}) == len(calls)
        messages.append({"role": "assistant", "content": text, "tool_calls": calls})
        results = [f"result-{step}-{c['function']['name']}" for c in calls]
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": r} for c, r in zip(calls, results)]
        answer, more = _turn(ctx, messages, stream)
        assert not more, f"step {step}: the model answers once it has the results"
        assert answer and answer.startswith("Tool ") and results[-1] in answer, (step, answer)
        messages.append({"role": "assistant", "content": answer})


@scenario("agent loop, 3 tool steps")
def agent_loop(ctx: Ctx) -> None:
    _agent(ctx, stream=False)


@scenario("agent loop, 3 tool steps, streaming")
def agent_loop_stream(ctx: Ctx) -> None:
    _agent(ctx, stream=True)


# -- embeddings -------------------------------------------------------------------------------


@scenario("embeddings")
def embeddings(ctx: Ctx) -> None:
    reply = ctx.client.embeddings.create(model=f"{ctx.model}-embed", input=["alpha", "beta"])
    assert [d.index for d in reply.data] == [0, 1]
    first, second = (d.embedding for d in reply.data)
    assert len(first) == len(second) > 0 and first != second
    assert abs(sum(x * x for x in first) - 1) < 1e-3, "a unit vector"


# -- errors -----------------------------------------------------------------------------------


@scenario("429 -> failover to a second deployment")
def throttle_failover(ctx: Ctx) -> None:
    ctx.sim.fault(throttle=30, match=ctx.target.fo_model)
    raw = ctx.client.chat.completions.with_raw_response.create(model=f"{ctx.model}-fo", messages=HELLO)
    assert outcomes(raw.headers) == [(f"{ctx.model}-fo", "http_429"), ("oa-backup", "ok")]
    assert raw.parse().choices[0].message.content == f"Hello from {BACKUP_NAME}. You said: Hello there"


@scenario("429, no second deployment -> RateLimitError + retry-after")
def throttle_no_backup(ctx: Ctx) -> None:
    ctx.sim.fault(throttle=30, match=ctx.target.main_model)
    with pytest.raises(openai.RateLimitError) as info:
        ctx.client.chat.completions.create(model=ctx.model, messages=HELLO)
    retry_after = info.value.response.headers.get("retry-after")
    assert retry_after is not None and int(retry_after) >= 1, info.value.response.headers


@scenario("upstream 400 -> BadRequestError")
def validation_error(ctx: Ctx) -> None:
    ctx.sim.fault(status=400, match=ctx.target.main_model)
    with pytest.raises(openai.BadRequestError) as info:
        ctx.client.chat.completions.create(model=ctx.model, messages=HELLO)
    assert f"{ctx.model}-main" in info.value.message, "the error names the deployment"
    assert ctx.sim.stats()["requests"] == 1, "a client error is not retried"


@scenario("wrong provider credentials -> 502")
def auth_error(ctx: Ctx) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        ctx.client.chat.completions.create(model=f"{ctx.model}-bad", messages=HELLO)
    assert info.value.status_code == 502, (info.value.status_code, info.value.message)
    assert info.value.code == "upstream_auth_failed" and "credentials" in info.value.message, info.value.message


@scenario("content filter -> finish content_filter")
def content_filter(ctx: Ctx) -> None:
    ctx.sim.fault(content_filter="output", match=ctx.target.main_model)
    reply = ctx.client.chat.completions.create(model=ctx.model, messages=ask("one two three four five six"))
    assert reply.choices[0].finish_reason == "content_filter"


@scenario("content filter -> failover where configured")
def content_filter_failover(ctx: Ctx) -> None:
    ctx.sim.fault(content_filter="prompt", match=ctx.target.fo_model)
    raw = ctx.client.chat.completions.with_raw_response.create(model=f"{ctx.model}-fo", messages=HELLO)
    assert outcomes(raw.headers) == [(f"{ctx.model}-fo", "content_filter"), ("oa-backup", "ok")]
    assert raw.parse().choices[0].finish_reason == "stop"


@scenario("context too long -> BadRequestError context_length_exceeded")
def context_length(ctx: Ctx) -> None:
    ctx.sim.fault(status=400, error_code="context_length_exceeded", match=ctx.target.main_model)
    with pytest.raises(openai.BadRequestError) as info:
        ctx.client.chat.completions.create(model=ctx.model, messages=HELLO)
    assert info.value.code == "context_length_exceeded", (info.value.code, info.value.message)


@scenario("context too long -> failover to a larger window")
def context_failover(ctx: Ctx) -> None:
    ctx.sim.fault(status=400, error_code="context_length_exceeded", match=ctx.target.fo_model)
    raw = ctx.client.chat.completions.with_raw_response.create(model=f"{ctx.model}-fo", messages=HELLO)
    (first, first_outcome), second = outcomes(raw.headers)
    assert first == f"{ctx.model}-fo" and first_outcome == "context_overflow", first_outcome
    assert second == ("oa-backup", "ok")


# The Responses API's rows and the published-schema rows register themselves on import (own modules).
from . import published as _published  # noqa: E402, F401
from . import responses as _responses  # noqa: E402, F401
