"""Regressions for what the property tests found in the parsers and translators: each input used
to escape as an exception other than a 4xx (a 500 for the client, the upstream call unmade).

1. Invalid UTF-8 in a field the gateway does not model: the decoder skipped it unchecked, the
   Anthropic and Gemini translators then failed to decode it (msgspec.DecodeError).
2. A number beyond float range (1e400) in such a field: same path (ValidationError).
3. JSON text nested deeper than the decoder's stack inside a string the translators decode again
   (tool-call arguments; a Gemini tool result): RecursionError.
4. Gemini `tool_choice: {type: allowed_tools}` whose `allowed_tools` (or an entry's `function`)
   is not an object: AttributeError.
5, 6: upstream answers, below.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError

from .strategies import deep
from .test_request_properties import ADAPTERS

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
TRANSLATING = [(a, m) for a, m, _ in ADAPTERS if a.kind in ("anthropic", "bedrock", "gemini", "vertex")]


def outcome(adapter, model: str, body: bytes) -> str:
    """'ok', or '400: <message>'; anything else raises."""
    try:
        asyncio.run(adapter.chat_request(parse_chat(body), model))
        return "ok"
    except ApiError as err:
        assert err.status == 400, err.body.message
        return f"400: {err.body.message}"


def test_invalid_utf8_anywhere_in_the_body_is_a_400_naming_the_problem():
    body = b'{"model": "g", "messages": [{"role": "user", "content": "hi"}], "x-extra": "\xff\xfe"}'
    with pytest.raises(ApiError) as info:
        parse_chat(body)
    assert info.value.status == 400 and "not valid UTF-8" in info.value.body.message
    assert parse_chat('{"model": "g", "messages": [{"role": "user", "content": "h\u00e9"}]}'.encode()).request


@pytest.mark.parametrize("adapter, model", TRANSLATING, ids=[a.kind for a, _ in TRANSLATING])
def test_a_number_out_of_float_range_in_an_unmodelled_field_is_a_400_or_dropped(adapter, model):
    body = b'{"model": "g", "messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1e400, "logit_bias": 1e400}'
    result = outcome(adapter, model, body)
    # The penalty is a modelled, bounded field now (schema/bounds.py): its 400 names it.
    assert result == "ok" or "cannot be read as JSON" in result or "'presence_penalty': Number out of range" in result


@pytest.mark.parametrize("adapter, model", TRANSLATING, ids=[a.kind for a, _ in TRANSLATING])
def test_tool_arguments_nested_too_deeply_are_a_400(adapter, model):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep(5000).decode()}}
    body = json.dumps(
        {
            "model": "g",
            "tools": [TOOL],
            "messages": [
                *USER,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
        }
    ).encode()
    assert "function.arguments must be a JSON object" in outcome(adapter, model, body)


def test_a_gemini_tool_result_nested_too_deeply_is_sent_as_text():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = json.dumps(
        {
            "model": "g",
            "tools": [TOOL],
            "messages": [
                *USER,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": deep(5000).decode()},
            ],
        }
    ).encode()
    gemini = next(a for a, _, _ in ADAPTERS if a.kind == "gemini")
    req = asyncio.run(gemini.chat_request(parse_chat(body), "gemini-2.5-flash"))
    sent = json.loads(req.body)["contents"][-1]["parts"][0]["functionResponse"]
    assert sent["response"] == {"result": deep(5000).decode()}


@pytest.mark.parametrize(
    "allowed", ["x", [1], {"tools": "x"}, {"tools": [{"function": "f"}]}, {"tools": [{"function": {"name": 3}}]}]
)
def test_gemini_allowed_tools_of_the_wrong_shape_are_a_400(allowed):
    body = json.dumps(
        {
            "model": "g",
            "messages": USER,
            "tools": [TOOL],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": allowed},
        }
    ).encode()
    gemini = next(a for a, _, _ in ADAPTERS if a.kind == "gemini")
    assert "allowed_tools lists no function" in outcome(gemini, "gemini-2.5-flash", body)


# -- upstream answers ------------------------------------------------------------------------
# 5. An upstream answer, stream event or error body nested deeper than the decoder's stack:
#    RecursionError escaped every reader (all of them handle msgspec.DecodeError only): a 500, or
#    a stream cut without an error event. schema/bounded.py makes it a DecodeError.
# 6. An embeddings answer with a value beyond float32, asked for as base64: OverflowError.


def test_upstream_answers_nested_too_deeply_count_as_malformed():
    from .test_upstream_properties import BY_KIND, _relay, _sse, _unary

    body = b'{"id": ' + deep(5000) + b"}"
    for kind in ("openai", "anthropic", "bedrock", "gemini"):
        _unary(kind, body)  # raises harness.Unexpected on anything but ValueError / a 5xx ApiError
    _relay("openai", _sse([body]), [])
    _relay("anthropic", b"event: message_start\ndata: " + body + b"\n\n", [])
    _relay("gemini", _sse([body]), [])
    for adapter, _, _ in BY_KIND.values():
        assert adapter.classify_error(400, {}, body).kind == "client_error"


def test_an_error_body_nested_too_deeply_still_gives_the_client_a_clean_error():
    from multihome.api.openai.errors import upstream_client_error
    from multihome.routing.attempts import Attempt, Served

    from .test_upstream_properties import BY_KIND, _Deployment

    body = b'{"error": {"message": "bad", "detail": ' + deep(5000) + b"}}"
    served = Served(_Deployment(BY_KIND["openai"][0]), 400, [Attempt("dep", "http_400", 1.0)], body)
    err = upstream_client_error(served)
    assert err.status == 400 and "rejected the request (HTTP 400)" in err.body.message


@pytest.mark.parametrize(
    "kind, model, body",
    [
        ("bedrock", "amazon.titan-embed-text-v2:0", {"embedding": [3.5e38]}),
        ("bedrock", "cohere.embed-english-v3", {"embeddings": [[1e300]], "texts": ["a"]}),
        ("gemini", "text-embedding-004", {"embeddings": [{"values": [-1e39]}]}),
        ("vertex", "text-embedding-005", {"predictions": [{"embeddings": {"values": [1e300]}}]}),
    ],
)
def test_an_embedding_beyond_float32_asked_for_as_base64_is_a_malformed_answer(kind, model, body):
    from multihome.schema.embeddings import parse_embeddings

    adapter = next(a for a, _, _ in ADAPTERS if a.kind == kind)
    request = parse_embeddings(b'{"model": "g", "input": "a", "encoding_format": "base64"}')

    async def call():
        await adapter.embeddings_request(request, model)
        with pytest.raises(ValueError, match="does not fit float32"):
            adapter.embeddings_response(json.dumps(body).encode(), model, {})

    asyncio.run(call())


# 7. An Anthropic-door tool whose input_schema is not an object schema: Anthropic refuses it (400),
#    but routed to another cloud the model answered with array or string arguments, which no
#    tool_use block can carry: a 502 blaming the upstream (found by the long fuzz run).
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "integer"}},
        {"type": "string"},
        {},
        {"anyOf": [{"type": "object"}]},
        [1],
        "x",
    ],
)
def test_an_anthropic_tool_whose_input_is_not_an_object_is_a_400(schema):
    from multihome.api.anthropic.translate import to_canonical
    from multihome.schema.anthropic import parse_messages

    body = json.dumps(
        {"model": "g", "max_tokens": 9, "messages": USER, "tools": [{"name": "f", "input_schema": schema}]}
    ).encode()
    with pytest.raises(ApiError) as info:
        to_canonical(parse_messages(body))
    assert info.value.status == 400 and info.value.body.param == "tools.0.input_schema.type"
