"""OpenAI <-> Bedrock Converse translation, both directions, table-driven."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from multihome.providers.aws import BearerSigner, Runtime, error_name
from multihome.providers.base import CAPACITY, CLIENT_ERROR, CONTEXT_OVERFLOW, UNAVAILABLE
from multihome.providers.bedrock.adapter import BedrockAdapter
from multihome.providers.bedrock.request import converse_body
from multihome.providers.bedrock.response import chat_completion
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError

PNG_B64 = base64.b64encode(b"\x89PNG fake").decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "w",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def body_of(**req) -> tuple[dict, list[str]]:
    req.setdefault("model", "m")
    raw, dropped = converse_body(parse_chat(json.dumps(req).encode()))
    return json.loads(raw), dropped


@pytest.mark.parametrize(
    "request_fields, expected_subset",
    [
        (
            {
                "messages": [
                    {"role": "system", "content": "A"},
                    {"role": "developer", "content": "B"},
                    {"role": "user", "content": "hi"},
                ]
            },
            {"system": [{"text": "A"}, {"text": "B"}], "messages": [{"role": "user", "content": [{"text": "hi"}]}]},
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            {"messages": [{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]},
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5,
                "temperature": 0.3,
                "top_p": 0.9,
                "stop": "END",
            },
            {"inferenceConfig": {"maxTokens": 5, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"]}},
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9, "max_tokens": 5},
            {"inferenceConfig": {"maxTokens": 9}},
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]},
            {
                "toolConfig": {
                    "tools": [
                        {
                            "toolSpec": {
                                "name": "weather",
                                "description": "w",
                                "inputSchema": {"json": WEATHER["function"]["parameters"]},
                            }
                        }
                    ],
                    "toolChoice": {"auto": {}},
                }
            },
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER], "tool_choice": "required"},
            {"toolConfig": {"toolChoice": {"any": {}}}},
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
            },
            {"toolConfig": {"toolChoice": {"tool": {"name": "weather"}}}},
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}],
                    }
                ]
            },
            {"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": PNG_B64}}}]}]},
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}},
            },
            {
                "outputConfig": {
                    "textFormat": {
                        "type": "json_schema",
                        "structure": {"jsonSchema": {"schema": json.dumps({"type": "object"}), "name": "p"}},
                    }
                }
            },
        ),
    ],
    ids=[
        "system-lifted",
        "same-role-merged",
        "inference",
        "max-completion-wins",
        "tools",
        "required",
        "named",
        "image",
        "json-schema",
    ],
)
def test_request_mapping(request_fields, expected_subset):
    body, _ = body_of(**request_fields)
    for key, value in expected_subset.items():
        if key == "toolConfig":
            for k, v in value.items():
                assert body["toolConfig"][k] == v
        else:
            assert body[key] == value


def test_tool_history_becomes_tool_use_and_merged_tool_results():
    body, _ = body_of(
        messages=[
            {"role": "user", "content": "weather in a and b"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"a"}'}},
                    {"id": "t2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"b"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "t2", "content": "rain"},
            {"role": "user", "content": "thanks"},
        ],
        tools=[WEATHER],
    )
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "a"}}},
        {"toolUse": {"toolUseId": "t2", "name": "weather", "input": {"city": "b"}}},
    ]
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}], "status": "success"}},
        {"toolResult": {"toolUseId": "t2", "content": [{"text": "rain"}], "status": "success"}},
        {"text": "thanks"},
    ]


def test_tool_choice_none_omits_tools_unless_history_needs_them():
    body, dropped = body_of(messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice="none")
    assert "toolConfig" not in body and dropped == []
    body, dropped = body_of(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "ok"},
        ],
        tools=[WEATHER],
        tool_choice="none",
    )
    assert "toolChoice" not in body["toolConfig"] and body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "weather"
    assert dropped == ["tool_choice"]
    # History with tool blocks but no tools at all: declare the names the history used.
    body, _ = body_of(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "ok"},
        ]
    )
    assert body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "lookup"


@pytest.mark.parametrize(
    "extra, dropped",
    [
        ({"seed": 1}, ["seed"]),
        ({"temperature": 1.7}, ["temperature"]),
        ({"logprobs": True}, ["logprobs"]),
        ({"logprobs": False, "seed": None}, []),
        ({"parallel_tool_calls": False, "tools": [WEATHER]}, ["parallel_tool_calls"]),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, ["messages[].name"]),
    ],
)
def test_dropped_parameters_are_reported(extra, dropped):
    fields = {"messages": [{"role": "user", "content": "hi"}], **extra}
    body, got = body_of(**fields)
    assert got == dropped
    if "temperature" in extra:
        assert body["inferenceConfig"]["temperature"] == 1.0


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"n": 2}, "n"),
        ({"functions": [{"name": "f"}]}, "functions"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "tools[0].type"),
    ],
)
def test_refused_parameters_are_400(extra, param):
    with pytest.raises(ApiError) as err:
        body_of(**{"messages": [{"role": "user", "content": "hi"}], **extra})
    assert err.value.status == 400 and err.value.body.param == param


@pytest.mark.parametrize(
    "stop_reason, finish",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_response_mapping(stop_reason, finish):
    body = msgspec.json.encode(
        {
            "output": {
                "message": {
                    "role": "assistant",
                    "content": [
                        {"text": "Hi "},
                        {"text": "there"},
                        {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "x"}}},
                    ],
                }
            },
            "stopReason": stop_reason,
            "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 20, "cacheReadInputTokens": 6},
        }
    )
    out = json.loads(chat_completion(body, "claude"))
    choice = out["choices"][0]
    assert choice["finish_reason"] == finish and choice["message"]["content"] == "Hi there"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city":"x"}'}
    assert out["usage"] == {
        "prompt_tokens": 16,
        "completion_tokens": 4,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 6},
    }
    adapter = BedrockAdapter(Runtime("b", "http://x", BearerSigner("")))
    from multihome.schema.peek import peek_decoder

    assert adapter.is_refusal(peek_decoder.decode(chat_completion(body, "claude"))) is (finish == "content_filter")


def test_malformed_output_is_a_broken_upstream():
    body = b'{"output":{"message":{"role":"assistant","content":[]}},"stopReason":"malformed_tool_use","usage":{}}'
    with pytest.raises(ValueError):
        chat_completion(body, "m")


@pytest.mark.parametrize(
    "status, headers, body, kind, label",
    [
        (
            429,
            {"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"},
            b'{"message":"Too many requests"}',
            CAPACITY,
            "http_429",
        ),
        (
            400,
            {},
            b'{"__type":"com.amazon.coral#ServiceQuotaExceededException","message":"quota"}',
            CAPACITY,
            "http_400",
        ),
        (503, {"x-amzn-ErrorType": "ServiceUnavailableException"}, b'{"message":"x"}', UNAVAILABLE, "http_503"),
        (429, {"x-amzn-ErrorType": "ModelNotReadyException"}, b'{"message":"x"}', UNAVAILABLE, "http_429"),
        (408, {"x-amzn-ErrorType": "ModelTimeoutException"}, b'{"message":"x"}', UNAVAILABLE, "http_408"),
        (
            400,
            {"x-amzn-ErrorType": "ValidationException"},
            b'{"message":"Input is too long for requested model."}',
            CONTEXT_OVERFLOW,
            "context_overflow",
        ),
        (400, {"x-amzn-ErrorType": "ValidationException"}, b'{"message":"bad field"}', CLIENT_ERROR, "http_400"),
        (403, {"x-amzn-ErrorType": "AccessDeniedException"}, b'{"message":"no"}', CLIENT_ERROR, "http_403"),
        (404, {"x-amzn-ErrorType": "ResourceNotFoundException"}, b'{"message":"no"}', CLIENT_ERROR, "http_404"),
    ],
)
def test_error_classification(status, headers, body, kind, label):
    c = BedrockAdapter(Runtime("b", "http://x", BearerSigner(""))).classify_error(status, headers, body)
    assert (c.kind, c.label) == (kind, label)


def test_client_error_body_is_an_openai_envelope_naming_context_overflow():
    adapter = BedrockAdapter(Runtime("b", "http://x", BearerSigner("")))
    err = json.loads(adapter.client_error_body(400, b'{"message":"Input is too long for requested model."}'))["error"]
    assert (
        err["code"] == "context_length_exceeded"
        and "too long" in err["message"]
        and err["type"] == "invalid_request_error"
    )
    err = json.loads(
        adapter.client_error_body(404, b'{"__type":"com.amazon#ResourceNotFoundException","message":"no model"}')
    )["error"]
    assert err["code"] == "ResourceNotFoundException" and err["message"] == "AWS Bedrock: no model"
    assert error_name({}, b"not json") == (None, "")


def test_cohere_embeddings_usage_comes_from_the_token_count_header():
    adapter = BedrockAdapter(Runtime("b", "http://x", BearerSigner("")))
    body = json.dumps(
        {
            "embeddings": [[0.5], [0.25]],
            "id": "e",
            "response_type": "embeddings_floats",
            "texts": ["twelve chars", "and sixteen more"],
        }
    ).encode()
    counted = json.loads(
        adapter.embeddings_response(body, "cohere.embed-english-v3", {"x-amzn-bedrock-input-token-count": "9"})
    )
    assert counted["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    # Header missing (a proxy dropped it): estimated from the echoed texts (28 chars / 4), never 0.
    guessed = json.loads(adapter.embeddings_response(body, "cohere.embed-english-v3", {}))
    assert guessed["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert [d["embedding"] for d in guessed["data"]] == [[0.5], [0.25]]
