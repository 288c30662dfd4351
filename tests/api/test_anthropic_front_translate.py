"""Anthropic Messages request -> canonical OpenAI request, and OpenAI completion -> Anthropic message."""

from __future__ import annotations

import msgspec
import pytest

from multihome.api.anthropic.translate import to_anthropic, to_canonical
from multihome.schema.anthropic import parse_messages
from multihome.schema.errors import ApiError

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def canonical(**body):
    body = {"model": "claude-group", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], **body}
    parsed, dropped = to_canonical(parse_messages(msgspec.json.encode(body)))
    raw = {k: msgspec.json.decode(v) for k, v in parsed.raw.items()}
    return parsed, raw, dropped


def refused(**body) -> ApiError:
    body = {"model": "claude-group", "messages": [{"role": "user", "content": "Hi"}], **body}
    with pytest.raises(ApiError) as info:
        to_canonical(parse_messages(msgspec.json.encode(body)))
    assert info.value.status == 400
    return info.value


def test_plain_request_maps_model_max_tokens_and_message():
    parsed, raw, dropped = canonical()
    assert raw == {
        "model": "claude-group",
        "max_completion_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert parsed.request.max_completion_tokens == 64 and not parsed.stream and dropped == []
    assert parsed.needs == frozenset({"chat"})


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", "Be brief."),
        ([{"type": "text", "text": "Be brief."}], "Be brief."),
        (
            [{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}}],
            [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        ),
    ],
)
def test_system_becomes_the_first_message(system, expected):
    _, raw, _ = canonical(system=system)
    assert raw["messages"][0] == {"role": "system", "content": expected}
    assert raw["messages"][1]["role"] == "user"


@pytest.mark.parametrize(
    ("field", "value", "openai_field", "openai_value"),
    [
        ("temperature", 0.3, "temperature", 0.3),
        ("top_p", 0.9, "top_p", 0.9),
        ("stop_sequences", ["END", "STOP"], "stop", ["END", "STOP"]),
        ("metadata", {"user_id": "u-42"}, "user", "u-42"),
        ("tool_choice", {"type": "auto"}, "tool_choice", "auto"),
        ("tool_choice", {"type": "any"}, "tool_choice", "required"),
        ("tool_choice", {"type": "none"}, "tool_choice", "none"),
        (
            "tool_choice",
            {"type": "tool", "name": "get_weather"},
            "tool_choice",
            {"type": "function", "function": {"name": "get_weather"}},
        ),
        ("tool_choice", {"type": "any", "disable_parallel_tool_use": True}, "parallel_tool_calls", False),
        ("stream", True, "stream_options", {"include_usage": True}),
        (
            "output_config",
            {"format": {"type": "json_schema", "schema": {"type": "object"}}},
            "response_format",
            {"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": True}},
        ),
    ],
)
def test_parameters_map_to_openai(field, value, openai_field, openai_value):
    extra = {"tools": [WEATHER]} if field == "tool_choice" else {}
    _, raw, dropped = canonical(**{field: value}, **extra)
    assert raw[openai_field] == openai_value
    assert dropped == []


@pytest.mark.parametrize(
    ("body", "reported"),
    [
        ({"top_k": 5}, ["top_k"]),
        ({"thinking": {"type": "disabled"}}, []),
        ({"service_tier": "auto"}, ["service_tier"]),
        ({"container": "c1", "mcp_servers": []}, ["container", "mcp_servers"]),
        ({"system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]}, ["cache_control"]),
        ({"tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}}]}, ["cache_control"]),
        # metadata holds user_id only (Anthropic refuses other keys): any other is named, not dropped unseen
        ({"metadata": {"user_id": "u", "session": "s", "x y": 1}}, ["metadata.session", "metadata.x y"]),
        ({"metadata": None}, []),
    ],
)
def test_parameters_without_an_openai_equivalent_are_reported(body, reported):
    _, raw, dropped = canonical(**body)
    assert dropped == reported
    assert "top_k" not in raw and "thinking" not in raw and "cache_control" not in msgspec.json.encode(raw).decode()


@pytest.mark.parametrize(("budget", "effort"), [(1024, "low"), (2048, "medium"), (4096, "medium"), (8000, "high")])
def test_a_thinking_budget_becomes_the_nearest_effort_and_stays_exact_for_claude(budget, effort):
    parsed, raw, dropped = canonical(max_tokens=20000, thinking={"type": "enabled", "budget_tokens": budget})
    assert raw["reasoning_effort"] == effort and parsed.thinking_budget == budget and dropped == []
    assert "thinking" not in raw


@pytest.mark.parametrize(
    ("config", "effort", "reported"),
    [
        (None, "high", []),  # Anthropic's default effort
        ({"effort": "low"}, "low", []),
        ({"effort": "medium"}, "medium", []),
        ({"effort": "max"}, "max", []),
    ],
)
def test_adaptive_thinking_asks_the_effort_of_output_config(config, effort, reported):
    """`thinking: {type: adaptive}` (the anthropic SDK's ThinkingConfigAdaptiveParam): the model decides how much
    to think; the effort asked is what reaches the upstream, and a Claude upstream gets that effort's budget."""
    extra = {"output_config": config} if config is not None else {}
    parsed, raw, dropped = canonical(max_tokens=20000, thinking={"type": "adaptive"}, **extra)
    assert raw["reasoning_effort"] == effort and parsed.thinking_budget is None and dropped == reported
    assert "thinking" not in raw


def test_adaptive_thinking_with_an_unknown_effort_or_display_says_so():
    err = refused(max_tokens=64, thinking={"type": "adaptive"}, output_config={"effort": "ultra"})
    assert err.body.param == "output_config.effort" and "'ultra'" in err.body.message, err.body
    _, _, dropped = canonical(thinking={"type": "adaptive", "display": "omitted"})
    assert dropped == ["thinking.display"]


def test_tools_become_function_tools_and_need_the_tools_capability():
    parsed, raw, _ = canonical(tools=[WEATHER])
    assert raw["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather for a city",
            },
        }
    ]
    assert "tools" in parsed.needs


def test_tool_use_and_tool_result_round_trip_in_order():
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "rain"}],
                    "is_error": True,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    _, raw, _ = canonical(messages=messages, tools=[WEATHER])
    assert raw["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: rain"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]


def test_assistant_tool_use_only_has_null_content():
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ]
    _, raw, _ = canonical(messages=messages, tools=[WEATHER])
    assert raw["messages"][1]["content"] is None
    assert raw["messages"][2] == {"role": "tool", "tool_call_id": "t", "content": ""}
    assert len(raw["messages"]) == 3  # no empty user message after the tool result


@pytest.mark.parametrize(
    ("source", "url"),
    [
        ({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}, "data:image/png;base64,iVBORw0KGgo="),
        ({"type": "url", "url": "https://example.com/cat.jpg"}, "https://example.com/cat.jpg"),
    ],
)
def test_images_become_image_url_parts_and_need_vision(source, url):
    content = [{"type": "image", "source": source}, {"type": "text", "text": "What is this?"}]
    parsed, raw, _ = canonical(messages=[{"role": "user", "content": content}])
    assert raw["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "What is this?"},
    ]
    assert "vision" in parsed.needs


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "max_tokens: Field required"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens: must be at least 1"),
        ({"max_tokens": 5, "messages": []}, "at least one message"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "top-level 'system'"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                            }
                        ],
                    }
                ],
            },
            "'document'",
        ),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": []}]}, "at least one content block"),
        ({"max_tokens": 5, "temperature": 1.5}, "temperature"),
        ({"max_tokens": 5, "stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool"),
        (
            {"max_tokens": 5, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}},
            "no tool named 'nope'",
        ),
        ({"max_tokens": 5, "tool_choice": {"type": "any"}}, "needs 'tools'"),
        # An unknown choice is refused with tools or without (Anthropic's 400), never served as if absent.
        ({"max_tokens": 5, "tool_choice": {"type": "sometimes"}}, "'sometimes' is not one of"),
        # A block in the other role's turn: the message lists what that role's turn takes.
        (
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}],
            },
            "'tool_use' are not supported in user turns by this gateway (supported: text, image, tool_result)",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]},
                ],
            },
            "'tool_result' are not supported in assistant turns",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA=="}}
                        ],
                    }
                ],
            },
            "media_type",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}
                ],
            },
            "input: must be a JSON object",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(body, fragment):
    err = refused(**body)
    assert fragment in err.body.message


def test_invalid_json_is_400():
    with pytest.raises(ApiError) as info:
        parse_messages(b'{"model": ')
    assert info.value.status == 400 and "not valid JSON" in info.value.body.message


# --- responses -----------------------------------------------------------------------------------

REQ = parse_messages(
    msgspec.json.encode(
        {"model": "g", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}], "stop_sequences": ["END"]}
    )
).request


def completion(message: dict, finish: str, usage: dict | None = None, **choice) -> bytes:
    usage = usage or {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    return msgspec.json.encode(
        {
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "model": "gpt-4o-x",
            "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
        }
    )


@pytest.mark.parametrize(
    ("finish", "choice", "stop_reason", "stop_sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("stop", {"stop_reason": "END"}, "stop_sequence", "END"),  # vLLM says which stop string matched
        ("length", {}, "max_tokens", None),
        ("tool_calls", {}, "tool_use", None),
        ("content_filter", {}, "refusal", None),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish, choice, stop_reason, stop_sequence):
    out = msgspec.json.decode(to_anthropic(completion({"content": "hi"}, finish, **choice), REQ, "dep"))
    assert (out["stop_reason"], out["stop_sequence"]) == (stop_reason, stop_sequence)


def test_text_and_tool_calls_become_blocks_with_usage():
    message = {
        "content": "Let me look.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 64},
    }
    out = msgspec.json.decode(to_anthropic(completion(message, "tool_calls", usage), REQ, "dep"))
    assert out == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-x",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 36,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 64,
        },
    }


@pytest.mark.parametrize(
    ("upstream_id", "door_id"),
    [
        ("chatcmpl-abc", "msg_abc"),  # an OpenAI-shaped upstream's id, traceable
        ("chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL", "msg_01XFDUDYJgAACzvnptvVoYEL"),  # an Anthropic upstream's, as sent
        ("chatcmpl-msg_", "msg_msg_"),  # an upstream's bare prefix is never the whole id
        ("msg_", "msg_msg_"),
    ],
)
def test_the_message_id_is_the_upstreams_in_anthropics_shape(upstream_id, door_id):
    body = msgspec.json.decode(completion({"content": "hi"}, "stop"))
    body["id"] = upstream_id
    out = msgspec.json.decode(to_anthropic(msgspec.json.encode(body), REQ, "dep"))
    assert out["id"] == door_id


@pytest.mark.parametrize("upstream_id", ["", None, "absent"])
def test_an_answer_without_an_id_gets_one_of_its_own(upstream_id):
    """No upstream id (empty, null, absent): each answer gets a `msg_` id of its own, never an empty or a shared
    one (was: `msg_gateway` for all of them, and a 502 for null)."""
    body = msgspec.json.decode(completion({"content": "hi"}, "stop"))
    if upstream_id == "absent":
        del body["id"]
    else:
        body["id"] = upstream_id
    ids = {msgspec.json.decode(to_anthropic(msgspec.json.encode(body), REQ, "dep"))["id"] for _ in range(2)}
    assert len(ids) == 2 and all(i.startswith("msg_") and len(i) > len("msg_") for i in ids), ids


def test_openai_refusal_is_a_refusal_text_block():
    out = msgspec.json.decode(
        to_anthropic(completion({"content": None, "refusal": "I can't help."}, "stop"), REQ, "dep")
    )
    assert out["content"] == [{"type": "text", "text": "I can't help."}] and out["stop_reason"] == "refusal"


def test_unparseable_tool_arguments_are_a_502_not_a_silent_empty_input():
    message = {
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}],
    }
    with pytest.raises(ApiError) as info:
        to_anthropic(completion(message, "tool_calls"), REQ, "dep-x")
    assert info.value.status == 502 and "dep-x" in info.value.body.message
