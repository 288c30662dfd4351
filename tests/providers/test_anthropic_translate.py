"""OpenAI request -> Anthropic body and Anthropic message -> OpenAI completion, table-driven."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from multihome.providers.anthropic.adapter import AnthropicAdapter, classify
from multihome.providers.anthropic.request import DEFAULT_MAX_TOKENS, JSON_TOOL
from multihome.providers.anthropic.response import chat_response
from multihome.providers.base import CAPACITY, CLIENT_ERROR, CONTEXT_OVERFLOW, UNAVAILABLE
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError

ADAPTER = AnthropicAdapter("http://sim.local", "k", "2023-06-01")
USER = {"role": "user", "content": "hi"}
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def translate(**request):
    parsed = parse_chat(msgspec.json.encode({"model": "g", **request}))
    up = asyncio.run(ADAPTER.chat_request(parsed, "claude-x"))
    return json.loads(up.body), up.dropped, up


REQUESTS = [
    (
        "defaults",
        {"messages": [USER]},
        {"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS, "messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "system and developer lifted and joined",
        {"messages": [{"role": "system", "content": "A"}, USER, {"role": "developer", "content": "B"}]},
        {"system": "A\n\nB", "messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "max_completion_tokens preferred",
        {"messages": [USER], "max_tokens": 9, "max_completion_tokens": 5},
        {"max_tokens": 5},
    ),
    ("stop string", {"messages": [USER], "stop": "END"}, {"stop_sequences": ["END"]}),
    ("sampling", {"messages": [USER], "temperature": 0.5, "top_p": 0.9}, {"temperature": 0.5, "top_p": 0.9}),
    ("user becomes metadata", {"messages": [USER], "user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
    ("stream", {"messages": [USER], "stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
    (
        "consecutive users merged",
        {"messages": [USER, {"role": "user", "content": "again"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}
            ]
        },
    ),
    (
        "tools and auto choice",
        {"messages": [USER], "tools": [FN], "tool_choice": "auto"},
        {
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "auto"},
        },
    ),
    (
        "required is any",
        {"messages": [USER], "tools": [FN], "tool_choice": "required"},
        {"tool_choice": {"type": "any"}},
    ),
    (
        "named tool",
        {"messages": [USER], "tools": [FN], "tool_choice": {"type": "function", "function": {"name": "f"}}},
        {"tool_choice": {"type": "tool", "name": "f"}},
    ),
    ("none", {"messages": [USER], "tools": [FN], "tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
    (
        "no parallel",
        {"messages": [USER], "tools": [FN], "parallel_tool_calls": False},
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
    ),
    (
        "tool history: calls become tool_use, results one user turn",
        {
            "messages": [
                USER,
                {"role": "assistant", "content": "ok", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "r2"}]},
                {"role": "user", "content": "next"},
            ],
            "tools": [FN],
        },
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "ok"},
                        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
                        {"type": "tool_use", "id": "call_2", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "r1"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "r2"},
                        {"type": "text", "text": "next"},
                    ],
                },
            ]
        },
    ),
    (
        "images",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg", "detail": "low"}},
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    ],
                }
            ]
        },
    ),
    (
        "json_schema -> output_config",
        {
            "messages": [USER],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        },
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
    ),
    (
        "json_object -> forced tool",
        {"messages": [USER], "response_format": {"type": "json_object"}},
        {"tool_choice": {"type": "tool", "name": JSON_TOOL}},
    ),
    (
        "cache_control kept on parts and messages",
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "U", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            ]
        },
        {
            "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "U", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
                }
            ],
        },
    ),
    (
        "empty assistant turn skipped",
        {"messages": [USER, {"role": "assistant", "content": ""}, USER]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "hi"}]}]},
    ),
]


@pytest.mark.parametrize("request_, expected", [(r, e) for _, r, e in REQUESTS], ids=[n for n, _, _ in REQUESTS])
def test_request_translation(request_, expected):
    body, dropped, _ = translate(**request_)
    for key, value in expected.items():
        assert body[key] == value, key
    assert dropped == []
    assert not {"n", "seed", "response_format", "parallel_tool_calls", "stream_options", "user"} & set(body)


def test_headers_and_url():
    _, _, up = translate(messages=[USER])
    assert up.url == "http://sim.local/v1/messages"
    assert up.headers == {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "k"}
    assert AnthropicAdapter(None, None, "v").url == "https://api.anthropic.com/v1/messages"
    assert AnthropicAdapter("https://gw.test/v1/", None, "v").url == "https://gw.test/v1/messages"


def test_dropped_parameters_are_reported_not_sent():
    body, dropped, _ = translate(
        messages=[USER],
        seed=1,
        presence_penalty=0.2,
        logit_bias={"1": 2},
        store=False,
        service_tier="auto",
        some_future_field=3,
    )
    assert sorted(dropped) == ["logit_bias", "presence_penalty", "seed", "service_tier", "some_future_field"]
    assert not set(dropped) & set(body)


REFUSED = [
    ("n", {"n": 2}),
    ("temperature", {"temperature": 1.4}),
    ("logprobs", {"logprobs": True}),
    ("audio", {"audio": {"voice": "alloy", "format": "wav"}}),
    ("modalities", {"modalities": ["text", "audio"]}),
    ("response_format", {"response_format": {"type": "json_object"}, "tools": [FN]}),
    (
        "content",
        {
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}
            ]
        },
    ),
    (
        "image/bmp",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}]}
            ]
        },
    ),
    (
        "arguments",
        {
            "messages": [
                USER,
                {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "not json"}}]},
            ]
        },
    ),
]


@pytest.mark.parametrize("fragment, extra", [(f, e) for f, e in REFUSED], ids=[f for f, _ in REFUSED])
def test_refused_parameters_are_a_400(fragment, extra):
    with pytest.raises(ApiError) as info:
        translate(**{"messages": [USER], **extra})
    assert info.value.status == 400
    assert fragment in info.value.body.message


def _message(content, stop_reason="end_turn", **usage):
    return msgspec.json.encode(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 4, **usage},
        }
    )


RESPONSES = [
    ("text", [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}], "end_turn", "Hello", None, "stop"),
    ("stop sequence", [{"type": "text", "text": "x"}], "stop_sequence", "x", None, "stop"),
    ("max tokens", [{"type": "text", "text": "x"}], "max_tokens", "x", None, "length"),
    ("context window", [], "model_context_window_exceeded", None, None, "length"),
    ("refusal", [{"type": "text", "text": "no"}], "refusal", "no", None, "content_filter"),
    ("pause turn", [{"type": "text", "text": "x"}], "pause_turn", "x", None, "stop"),
    (
        "tool use",
        [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
        ],
        "tool_use",
        None,
        [("toolu_1", "f", {"a": [1, 2]})],
        "tool_calls",
    ),
    (
        "json mode tool",
        [{"type": "tool_use", "id": "toolu_2", "name": JSON_TOOL, "input": {"k": "v"}}],
        "tool_use",
        '{"k":"v"}',
        None,
        "stop",
    ),
]


@pytest.mark.parametrize(
    "content, stop, text, calls, finish", [r[1:] for r in RESPONSES], ids=[r[0] for r in RESPONSES]
)
def test_response_translation(content, stop, text, calls, finish):
    out = json.loads(chat_response(_message(content, stop), "fallback"))
    choice = out["choices"][0]
    assert choice["message"]["content"] == text
    assert choice["finish_reason"] == finish
    got = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in choice["message"].get("tool_calls", [])
    ]
    assert got == (calls or [])
    assert out["id"] == "chatcmpl-msg_1" and out["model"] == "claude-x"


def test_usage_counts_cache_reads_and_writes_as_prompt():
    out = json.loads(
        chat_response(
            _message([{"type": "text", "text": "x"}], cache_read_input_tokens=100, cache_creation_input_tokens=20), "m"
        )
    )
    assert out["usage"]["prompt_tokens"] == 130
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    assert out["usage"]["total_tokens"] == 134


def _err(kind, message="x"):
    return msgspec.json.encode({"type": "error", "error": {"type": kind, "message": message}})


ERRORS = [
    (429, {"retry-after": "7"}, _err("rate_limit_error"), CAPACITY, "http_429", 7.0),
    (529, {}, _err("overloaded_error", "Overloaded"), CAPACITY, "http_529", None),
    (500, {}, _err("api_error"), UNAVAILABLE, "http_500", None),
    (504, {}, _err("timeout_error"), UNAVAILABLE, "http_504", None),
    (402, {}, _err("billing_error"), UNAVAILABLE, "http_402", None),
    (
        400,
        {},
        _err("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
        CONTEXT_OVERFLOW,
        "context_overflow",
        None,
    ),
    (400, {}, _err("invalid_request_error"), CLIENT_ERROR, "http_400", None),
    (401, {}, _err("authentication_error"), CLIENT_ERROR, "http_401", None),
    (403, {}, _err("permission_error"), CLIENT_ERROR, "http_403", None),
    (404, {}, _err("not_found_error"), CLIENT_ERROR, "http_404", None),
    (413, {}, _err("request_too_large"), CLIENT_ERROR, "http_413", None),
    (502, {}, b"<html>bad gateway</html>", UNAVAILABLE, "http_502", None),
]


@pytest.mark.parametrize(
    "status, headers, body, kind, label, retry_after", ERRORS, ids=[f"{e[0]}-{e[4]}" for e in ERRORS]
)
def test_error_classification(status, headers, body, kind, label, retry_after):
    c = classify(status, headers, body)
    assert (c.kind, c.label, c.retry_after) == (kind, label, retry_after)
