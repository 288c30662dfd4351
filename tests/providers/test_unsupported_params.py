"""A translating adapter's 400 for what its provider cannot take names the parameter as OpenAI's errors
name one, by its path in the request (`tools[1].type`), with the value it held in the message. Was a
`param` no client could look up: `tools[1] (type custom)`, `tools[1].type=custom`, `tool_choice type 'custom'`."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from multihome.providers.anthropic.adapter import AnthropicAdapter
from multihome.providers.bedrock.request import converse_body
from multihome.providers.gemini.request import request_body
from multihome.schema.chat import ParsedChat, parse_chat
from multihome.schema.errors import ApiError

ANTHROPIC = AnthropicAdapter("http://sim.local", "k", "2023-06-01")


def _anthropic(parsed: ParsedChat) -> None:
    asyncio.run(ANTHROPIC.chat_request(parsed, "claude-x"))


def _bedrock(parsed: ParsedChat) -> None:
    converse_body(parsed)


def _gemini(parsed: ParsedChat) -> None:
    request_body(parsed, vertex=False, model="gemini-2.5-flash")


USER = {"role": "user", "content": "hi"}
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CUSTOM = {"type": "custom", "custom": {"name": "free_text"}}
# Requests OpenAI's schema allows (a custom tool and its choice, the deprecated function message, a content
# part) that these providers cannot take, and the field each 400 names.
CASES = {
    "custom tool": ({"tools": [FN, CUSTOM]}, "tools[1].type", "custom"),
    "tool_choice custom": (
        {"tools": [FN], "tool_choice": {"type": "custom", "custom": {"name": "free_text"}}},
        "tool_choice.type",
        "custom",
    ),
    "function message": (
        {"messages": [USER, {"role": "function", "name": "f", "content": "x"}]},
        "messages[1].role",
        "function",
    ),
    "a part none of them takes": (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "video_url"}]}]},
        "messages[0].content[1].type",
        "video_url",
    ),
}


@pytest.mark.parametrize("translate", [_anthropic, _bedrock, _gemini], ids=["anthropic", "bedrock", "gemini"])
@pytest.mark.parametrize("case", CASES)
def test_what_a_provider_cannot_take_is_a_400_naming_its_path(translate, case):
    extra, param, value = CASES[case]
    parsed = parse_chat(msgspec.json.encode({"model": "m", "messages": [USER], **extra}))
    with pytest.raises(ApiError) as info:
        translate(parsed)
    body = info.value.body
    assert (info.value.status, body.param, body.code) == (400, param, "unsupported_parameter"), body
    assert f"{param} '{value}' is not supported" in body.message
