"""Function tool names are held to OpenAI's rule (a-z A-Z 0-9 _ -; 1-64 characters on chat completions, 1-128 on
Responses requests, as OpenAI's published schema has them), refused in OpenAI's words: its message, `param` and
`code` (schema/tool_names.py)."""

from __future__ import annotations

import json

import pytest

from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_create

PARAMS = {"type": "object", "properties": {}}
BAD = [
    ("get weather", "invalid_value", "string does not match pattern. Expected a string that matches the pattern "
     "'^[a-zA-Z0-9_-]+$'."),
    ("server.tool", "invalid_value", "does not match pattern"),
    ("émoji", "invalid_value", "does not match pattern"),
    ("", "empty_string", "empty string. Expected a string with minimum length 1"),
]  # fmt: skip


def _chat(name: str, at: int = 0) -> bytes:
    tools = [{"type": "function", "function": {"name": "ok", "parameters": PARAMS}}] * at
    tools.append({"type": "function", "function": {"name": name, "parameters": PARAMS}})
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools}).encode()


def _responses(name: str, at: int = 0) -> bytes:
    tools = [{"type": "function", "name": "ok", "parameters": PARAMS}] * at
    tools.append({"type": "function", "name": name, "parameters": PARAMS})
    return json.dumps({"model": "m", "input": "hi", "tools": tools}).encode()


TOO_LONG_CHAT = (
    "f" * 65,
    "string_above_max_length",
    "string too long. Expected a string with maximum length 64, but got a string with length 65 instead.",
)
TOO_LONG_RESPONSES = ("f" * 129, "string_above_max_length", "string too long. Expected a string with maximum length "
                      "128, but got a string with length 129 instead.")  # fmt: skip
CHAT = [(parse_chat, _chat, "tools[1].function.name")]
RESPONSES = [(parse_create, _responses, "tools[1].name")]


@pytest.mark.parametrize(
    ("name", "code", "said", "parse", "body", "param"),
    [(*bad, *where) for bad in [*BAD, TOO_LONG_CHAT] for where in CHAT]
    + [(*bad, *where) for bad in [*BAD, TOO_LONG_RESPONSES] for where in RESPONSES],
)
def test_a_name_outside_openais_rule_is_a_400_naming_the_param(name, code, said, parse, body, param):
    with pytest.raises(ApiError) as refused:
        parse(body(name, at=1))
    err = refused.value
    assert err.status == 400 and err.body.param == param and err.body.code == code
    assert err.body.message == f"Invalid '{param}': {said}" or said in err.body.message
    assert err.body.message.startswith(f"Invalid '{param}': ")
    assert name[:10] not in err.body.message or not name  # the name is not echoed (as OpenAI's is not)


@pytest.mark.parametrize("name", ["f", "get_weather", "Get-Weather_2", "f" * 64])
def test_names_within_the_rule_pass(name):
    assert parse_chat(_chat(name)).request.tools[0].function.name == name
    assert parse_create(_responses(name)).tools[0].name == name


@pytest.mark.parametrize("name", ["f" * 65, "g" * 128])
def test_a_responses_name_may_be_longer_than_chats(name):
    """OpenAI's Responses schema allows function names of up to 128 characters (FunctionToolParam); chat's 64."""
    assert parse_create(_responses(name)).tools[0].name == name
    assert parse_create(_responses_history(name)).input[1].name == name
    with pytest.raises(ApiError):
        parse_chat(_chat(name))


def _chat_history(name: str) -> bytes:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**call, "function": {"name": "ok", "arguments": "{}"}}, call],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    return json.dumps({"model": "m", "messages": messages}).encode()


def _responses_history(name: str) -> bytes:
    items = [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "call_1", "name": name, "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    return json.dumps({"model": "m", "input": items}).encode()


@pytest.mark.parametrize(
    ("name", "code", "said", "parse", "body", "param"),
    [(*bad, parse_chat, _chat_history, "messages[1].tool_calls[1].function.name") for bad in [*BAD, TOO_LONG_CHAT]]
    + [(*bad, parse_create, _responses_history, "input[1].name") for bad in [*BAD, TOO_LONG_RESPONSES]],
)
def test_a_tool_call_in_the_history_is_held_to_the_same_rule(name, code, said, parse, body, param):
    """OpenAI refuses a call in the history whose name breaks the rule (`Invalid 'messages[9].tool_calls[0]
    .function.name': string does not match pattern...`, `invalid_value`): so does the gateway, before any
    upstream gets a name it would refuse in its own words or mangle."""
    with pytest.raises(ApiError) as refused:
        parse(body(name))
    err = refused.value
    assert err.status == 400 and err.body.param == param and err.body.code == code
    assert err.body.message.startswith(f"Invalid '{param}': ") and said in err.body.message
    assert name[:10] not in err.body.message or not name


def test_tool_calls_in_the_history_within_the_rule_pass():
    assert parse_chat(_chat_history("get_weather")).request.messages[1].tool_calls[1].function.name == "get_weather"
    assert parse_create(_responses_history("Get-Weather_2")).input[1].name == "Get-Weather_2"
