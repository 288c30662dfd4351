"""Rows of the conformance matrix that hold each provider kind's answers, as the gateway put them on the
wire, against OpenAI's published schemas and the official SDK's types (tests/openai_schemas.py): chat
answers, every chunk of a stream, embeddings, the model list and errors. The bodies are read raw, not
through the SDK's parsed models, which fill in what is absent and keep what they do not know.

Each request is first held against OpenAI's request schema, so what a row sends is something OpenAI
accepts: the gateway must serve it, or refuse it for the provider with a 400 naming the parameter.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from openai_schemas import problems

from .providers import CLIENT_KEY
from .scenarios import HELLO, TOOLS, Ctx, ask, scenario

NO_N = {"anthropic", "bedrock", "foundry_anthropic", "vertex_anthropic", "bedrock_anthropic"}  # one choice per call


def conforms(name: str, obj: Any) -> Any:
    found = problems(name, obj)
    assert not found, f"{name} {json.dumps(obj)[:600]}\n" + "\n".join(found)
    return obj


def allowed(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body`, once it is shown to be a request OpenAI's schema allows (a row must not test the gateway
    with something OpenAI itself would refuse)."""
    found = problems(name, body)
    assert not found, f"the row's own request is not one OpenAI allows: {found}"
    return body


def refused(do: Callable[[], object], status: int) -> dict[str, Any]:
    """`do()` fails with `status` and an error in OpenAI's envelope; the error object."""
    with pytest.raises(openai.APIStatusError) as info:
        do()
    assert info.value.status_code == status, (info.value.status_code, info.value.response.text)
    return conforms("ErrorResponse", info.value.response.json())["error"]


def chat(ctx: Ctx, **body: Any) -> dict[str, Any]:
    sent = allowed("CreateChatCompletionRequest", {"model": ctx.model, "messages": HELLO, **body})
    raw = ctx.client.chat.completions.with_raw_response.create(**sent)
    return conforms("CreateChatCompletionResponse", raw.http_response.json())


def chunks(ctx: Ctx, **body: Any) -> list[dict[str, Any]]:
    """Every chunk of a streamed chat answer, each held against the chunk schema; the stream ends in [DONE]."""
    sent = allowed("CreateChatCompletionRequest", {"model": ctx.model, "messages": HELLO, "stream": True, **body})
    with ctx.client.chat.completions.with_streaming_response.create(**sent) as raw:
        datas = [line[6:] for line in raw.iter_lines() if line.startswith("data: ")]
    assert datas and datas[-1] == "[DONE]", datas[-3:]
    out = [conforms("CreateChatCompletionStreamResponse", json.loads(d)) for d in datas[:-1]]
    assert out, "a stream of no chunks"
    return out


@scenario("published schema: chat answers")
def published_chat(ctx: Ctx) -> None:
    plain = chat(ctx)
    assert plain["choices"][0]["message"]["content"] == ctx.hello
    called = chat(ctx, messages=ask("Weather and time, in parallel please"), tools=TOOLS, parallel_tool_calls=True)
    assert called["choices"][0]["finish_reason"] == "tool_calls" and called["choices"][0]["message"]["tool_calls"]
    named = {"type": "function", "function": {"name": "get_time"}}
    chat(ctx, messages=ask("Weather and time, in parallel please"), tools=TOOLS, tool_choice=named)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}}
    chat(ctx, messages=ask("Plan a trip"), response_format=fmt)
    assert chat(ctx, max_completion_tokens=3)["choices"][0]["finish_reason"] == "length"
    chat(ctx, metadata={"team": "conformance"}, user="u-1", seed=7, stop="never-said", temperature=0.5)
    ctx.sim.fault(content_filter="output", match=ctx.target.main_model)
    assert chat(ctx, messages=ask("one two three four"))["choices"][0]["finish_reason"] == "content_filter"
    ctx.sim.clear_faults()


@scenario("published schema: n > 1 (or its 400 where the provider makes one choice)")
def published_n(ctx: Ctx) -> None:
    if ctx.target.name in NO_N:
        error = refused(lambda: chat(ctx, n=2), 400)
        assert error["param"] == "n", error
        return
    answer = chat(ctx, n=2)
    assert [c["index"] for c in answer["choices"]] == [0, 1]


@scenario("published schema: stream chunks (text and usage, tool calls)")
def published_stream(ctx: Ctx) -> None:
    text = chunks(ctx, stream_options={"include_usage": True})
    assert text[-1]["choices"] == [] and text[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in text[:-1] if "usage" in c), "only the last chunk carries usage"
    assert [c["choices"][0]["finish_reason"] for c in text[:-1] if c["choices"]][-1] == "stop"
    calls = chunks(ctx, messages=ask("Weather and time, in parallel please"), tools=TOOLS)
    assert [c["choices"][0]["finish_reason"] for c in calls if c["choices"]][-1] == "tool_calls"
    assert "usage" not in calls[-1] or calls[-1]["usage"] is None, "usage only when asked for"


def _floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@scenario("published schema: embeddings (float and base64)")
def published_embeddings(ctx: Ctx) -> None:
    if ctx.target.embed_model is None:
        pytest.skip("gap: the provider has no embeddings")
    model = f"{ctx.model}-embed"
    # `float` said: the SDK asks for base64 when the caller does not say.
    body = allowed("CreateEmbeddingRequest", {"model": model, "input": ["alpha", "beta"], "encoding_format": "float"})
    floats = conforms(
        "CreateEmbeddingResponse", ctx.client.embeddings.with_raw_response.create(**body).http_response.json()
    )
    assert [d["index"] for d in floats["data"]] == [0, 1]
    body = allowed("CreateEmbeddingRequest", {**body, "encoding_format": "base64"})
    packed = ctx.client.embeddings.with_raw_response.create(**body).http_response.json()
    assert all(isinstance(d["embedding"], str) for d in packed["data"]), "base64 asked, base64 answered"
    # OpenAI's schema describes the float form only; the base64 one is the same list, packed.
    conforms(
        "CreateEmbeddingResponse",
        {**packed, "data": [{**d, "embedding": _floats(d["embedding"])} for d in packed["data"]]},
    )


@scenario("published schema: models and errors")
def published_errors(ctx: Ctx) -> None:
    listed = ctx.client.models.with_raw_response.list().http_response.json()
    conforms("ListModelsResponse", listed)
    for model in listed["data"]:
        conforms("Model", model)
    one = ctx.client.models.with_raw_response.retrieve(ctx.model).http_response.json()
    assert conforms("Model", one)["id"] == ctx.model
    refused(lambda: ctx.client.models.retrieve("no-such-model"), 404)
    refused(lambda: ctx.client.completions.create(model=ctx.model, prompt="x"), 404)  # legacy completions: not served
    refused(lambda: chat(ctx, model="no-such-model"), 404)
    hot = {"model": ctx.model, "messages": HELLO, "temperature": 5}
    assert problems("CreateChatCompletionRequest", hot), "a request OpenAI refuses"
    assert refused(lambda: ctx.client.chat.completions.create(**hot), 400)["param"] == "temperature"
    ctx.sim.fault(status=400, match=ctx.target.main_model)
    refused(lambda: chat(ctx), 400)
    ctx.sim.clear_faults()
    ctx.sim.fault(throttle=30, match=ctx.target.main_model)
    refused(lambda: chat(ctx), 429)
    ctx.sim.clear_faults()
    assert refused(lambda: chat(ctx, model=f"{ctx.model}-bad"), 502)["code"] == "upstream_auth_failed"
    wrong = openai.OpenAI(base_url=str(ctx.client.base_url), api_key=CLIENT_KEY + "-not", max_retries=0)
    refused(lambda: wrong.chat.completions.create(model=ctx.model, messages=HELLO), 401)
    got = httpx.put(f"{ctx.client.base_url}chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert got.status_code == 405
    conforms("ErrorResponse", got.json())


WEATHER_ONLY = [TOOLS[0]]
CUSTOM = {"type": "custom", "custom": {"name": "free_text"}}
PATH = re.compile(r"[a-z_]+(\[\d+\]|\.[a-z_]+)*")  # a parameter as OpenAI's errors name one: tools[1].type
CALLED = [
    {"role": "user", "content": "What is the weather in Oslo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
]
# Requests OpenAI's schema allows, each with something less common in it.
ALLOWED: dict[str, dict[str, Any]] = {
    "nulls": {"stop": None, "seed": None, "temperature": None, "n": None, "max_completion_tokens": None},
    "stop string": {"stop": "never-said"},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "logit_bias": {"logit_bias": {"50256": -100}},
    "metadata and store": {"metadata": {"team": "conformance"}, "store": False},
    "user ids": {"user": "u-1", "safety_identifier": "s-1", "prompt_cache_key": "k-1"},
    "service_tier auto": {"service_tier": "auto"},
    "verbosity": {"verbosity": "low"},
    "modalities text": {"modalities": ["text"]},
    "parallel_tool_calls false": {"tools": WEATHER_ONLY, "parallel_tool_calls": False},
    "tool_choice allowed_tools": {
        "tools": TOOLS,
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]},
        },
    },
    "tool_choice none without tools": {"tool_choice": "none"},
    "json_schema without schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "free"}}},
    "response_format text": {"response_format": {"type": "text"}},
    "developer parts": {
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, *HELLO]
    },
    "named user": {"messages": [{"role": "user", "content": "Hello there", "name": "ada"}]},
    "assistant parts and refusal": {
        "messages": [
            *HELLO,
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Earlier."}], "refusal": None},
            *HELLO,
        ]
    },
    "tool result as parts": {"messages": CALLED, "tools": WEATHER_ONLY},
    "stream_options both": {"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}},
    "stream false with nulls": {"stream": False, "stream_options": None},
    "custom tool": {"tools": [*WEATHER_ONLY, CUSTOM]},
    "tool_choice custom": {"tools": [CUSTOM], "tool_choice": {"type": "custom", "custom": {"name": "free_text"}}},
    "file part": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello there"},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                    },
                ],
            }
        ]
    },
}


def _served_or_declined(ctx: Ctx, name: str, extra: dict[str, Any]) -> None:
    body = allowed("CreateChatCompletionRequest", {"model": ctx.model, "messages": HELLO, **extra})
    if body.get("stream"):
        try:
            chunks(ctx, **{k: v for k, v in body.items() if k not in ("model", "stream")})
        except openai.BadRequestError as exc:
            _declined(name, body, exc)
        return
    try:
        chat(ctx, **{k: v for k, v in body.items() if k != "model"})
    except openai.BadRequestError as exc:
        _declined(name, body, exc)


def _declined(name: str, body: dict[str, Any], exc: openai.BadRequestError) -> None:
    """A provider may lack what OpenAI allows: then a 400 that names the parameter, as OpenAI names one
    (the gateway's own `unsupported_parameter`, or the upstream's refusal passed on with its param)."""
    error = conforms("ErrorResponse", exc.response.json())["error"]
    param = error["param"] or ""
    upstream = error["message"].startswith(f"Deployment '{body['model']}-main' rejected the request")
    assert (error["code"] == "unsupported_parameter" or upstream) and PATH.fullmatch(param), (name, error)
    assert param.split(".")[0].split("[")[0] in body, (name, error)


@scenario("published schema: less common requests OpenAI allows are served (or named as unsupported)")
def published_allowed(ctx: Ctx) -> None:
    failures = []
    for name, extra in ALLOWED.items():
        try:
            _served_or_declined(ctx, name, extra)
        except (AssertionError, openai.APIError) as exc:
            failures.append(f"{name}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)


# Requests OpenAI's schema refuses, and the parameter its 400 names.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "temperature above 2": ({"temperature": 3}, "temperature"),
    "n of 0": ({"n": 0}, "n"),
    "n above 128": ({"n": 129}, "n"),
    "top_logprobs above 20": ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    "presence_penalty above 2": ({"presence_penalty": 2.5}, "presence_penalty"),
    "no messages": ({"messages": []}, "messages"),
    "a role nobody has": ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    "content a number": ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    "tool_choice unknown": ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    "response_format unknown": ({"response_format": {"type": "yaml"}}, "response_format.type"),
    "five stop sequences": ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    "reasoning_effort unknown": ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    "service_tier unknown": ({"service_tier": "turbo"}, "service_tier"),
    "max_completion_tokens a string": ({"max_completion_tokens": "ten"}, "max_completion_tokens"),
    "stream_options include_usage a string": (
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
    ),
    "logprobs a string": ({"logprobs": "yes"}, "logprobs"),
    "parallel_tool_calls a string": ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    "metadata value a number": ({"metadata": {"k": 1}}, "metadata"),
    "safety_identifier over 64": ({"safety_identifier": "s" * 65}, "safety_identifier"),
    "store a string": ({"store": "yes"}, "store"),
    "user a number": ({"user": 5}, "user"),
}


@scenario("published schema: requests OpenAI refuses are a 400 naming the parameter")
def published_refused(ctx: Ctx) -> None:
    failures = []
    for name, (extra, param) in REFUSED.items():
        body = {"model": ctx.model, "messages": HELLO, **extra}
        if not problems("CreateChatCompletionRequest", body):
            failures.append(f"{name}: OpenAI's schema allows it (the row is wrong)")
            continue
        try:
            got = ctx.client.chat.completions.with_raw_response.create(**body)
        except openai.APIStatusError as exc:
            error = exc.response.json().get("error") or {}
            if exc.status_code != 400 or problems("ErrorResponse", exc.response.json()) or error["param"] != param:
                failures.append(
                    f"{name}: HTTP {exc.status_code} param {error.get('param')!r}: {exc.response.text[:200]}"
                )
        else:
            failures.append(f"{name}: served (HTTP {got.status_code}), not refused")
    assert not failures, "\n".join(failures)
