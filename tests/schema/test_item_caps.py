"""A request's items (chat and Anthropic `messages`, Responses `input`) are capped at bounds.MAX_ITEMS:
beyond it, OpenAI's 400 for a too-long array, before any per-item work (docs/hostile-input.md)."""

import msgspec
import pytest

from multihome.schema import bounds, decoding
from multihome.schema.anthropic import parse_messages
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError
from multihome.schema.responses import (
    parse_add_items,
    parse_create,
    parse_create_conversation,
    parse_update_conversation,
)

MESSAGE = {"role": "user", "content": "x"}
DOORS = [
    ("messages", lambda items: parse_chat(msgspec.json.encode({"model": "m", "messages": items}))),
    ("input", lambda items: parse_create(msgspec.json.encode({"model": "m", "input": items}))),
    ("messages", lambda items: parse_messages(msgspec.json.encode({"model": "m", "max_tokens": 5, "messages": items}))),
]


@pytest.mark.parametrize(("param", "parse"), DOORS)
def test_one_item_past_the_cap_is_openais_400(param, parse):
    parse([MESSAGE] * bounds.MAX_ITEMS)  # the cap itself is taken
    with pytest.raises(ApiError) as info:
        parse([MESSAGE] * (bounds.MAX_ITEMS + 1))
    err = info.value
    assert err.status == 400
    assert (err.body.param, err.body.code, err.body.type) == (param, "array_above_max_length", "invalid_request_error")
    assert err.body.message == (
        f"Invalid '{param}': array too long. Expected an array with maximum length {bounds.MAX_ITEMS}, "
        f"but got an array with length {bounds.MAX_ITEMS + 1} instead."
    )


@pytest.mark.parametrize(("param", "parse"), DOORS)
def test_a_large_body_is_counted_before_its_items_are_decoded(param, parse):
    # The last item is of the wrong type: the count refuses the body before the typed decode could see it.
    with pytest.raises(ApiError) as info:
        parse([MESSAGE] * 100_000 + [{"role": 5}])  # (within json_values.MAX_VALUES: past it, a 413 first)
    assert info.value.body.code == "array_above_max_length"
    assert "length 100001" in info.value.body.message


@pytest.mark.parametrize(("param", "parse"), DOORS)
def test_the_tightest_array_past_the_cap_is_counted(param, parse):
    # The shortest JSON values: MAX_ITEMS + 1 of them need more bytes than a body may have uncounted.
    assert len(msgspec.json.encode([0] * (bounds.MAX_ITEMS + 1))) > decoding.COUNT_ITEMS_OVER
    with pytest.raises(ApiError) as info:
        parse([0] * (bounds.MAX_ITEMS + 1))
    assert (info.value.body.param, info.value.body.code) == (param, "array_above_max_length")


# -- parts: content parts, tool calls and blocks in all of a request's items, capped at bounds.MAX_PARTS --

TEXT_PART = {"type": "text", "text": ""}
INPUT_PART = {"type": "input_text", "text": ""}
PART_DOORS = [
    (
        "messages[1].content",
        lambda n: parse_chat(msgspec.json.encode({"model": "m", "messages": _split(n, TEXT_PART, "user")})),
    ),
    (
        "input[1].content",
        lambda n: parse_create(msgspec.json.encode({"model": "m", "input": _split(n, INPUT_PART, "user")})),
    ),
    (
        "messages[1].content",
        lambda n: parse_messages(
            msgspec.json.encode({"model": "m", "max_tokens": 5, "messages": _split(n, TEXT_PART, "user")})
        ),
    ),
    ("items[1].content", lambda n: parse_add_items(msgspec.json.encode({"items": _split(n, INPUT_PART, "user")}))),
]


def _split(n: int, part: dict, role: str) -> list[dict]:
    """`n` parts in two messages: the cap is on all of them together."""
    return [{"role": role, "content": [part] * (n // 2)}, {"role": role, "content": [part] * (n - n // 2)}]


@pytest.mark.parametrize(("param", "parse"), PART_DOORS)
def test_one_part_past_the_cap_in_all_the_items_is_a_400_naming_the_array(param, parse):
    """~700,000 tiny parts held the event loop ~220 ms in the typed decode alone: now counted first."""
    parse(bounds.MAX_PARTS)  # the cap itself is taken
    with pytest.raises(ApiError) as info:
        parse(bounds.MAX_PARTS + 1)
    err = info.value
    assert (err.status, err.body.param, err.body.code) == (400, param, "array_above_max_length")
    assert f"at most {bounds.MAX_PARTS}" in err.body.message and f"at least {bounds.MAX_PARTS + 1}" in err.body.message


@pytest.mark.parametrize(("param", "parse"), PART_DOORS)
def test_a_large_body_of_tiny_parts_is_refused_before_its_typed_decode(param, parse, monkeypatch):
    """120,000 parts (a 3.5 MiB body; more are past json_values.MAX_VALUES, refused before any count): refused
    by the count, which never decodes a part."""
    from multihome.schema import anthropic as anthropic_schema
    from multihome.schema import chat, responses

    for module, name in ((chat, "_typed"), (responses, "_create"), (responses, "_add_items")):
        monkeypatch.setattr(module, name, _Refusing(getattr(module, name)))
    monkeypatch.setattr(anthropic_schema, "_typed", _Refusing(anthropic_schema._typed))
    with pytest.raises(ApiError) as info:
        parse(120_000)
    first = param.replace("[1]", "[0]", 1)  # (the first half alone passes the cap)
    assert (info.value.body.param, info.value.body.code) == (first, "array_above_max_length")


class _Refusing:
    """A typed decoder that must not be reached (registered as the one it replaces)."""

    def __init__(self, real):
        if id(real) in decoding._COUNTED:
            decoding._COUNTED[id(self)] = decoding._COUNTED[id(real)]

    def decode(self, body):
        raise AssertionError("the typed decode ran")


def test_nested_tool_result_blocks_and_system_blocks_count_as_parts():
    block = {"type": "text", "text": ""}
    result = {"type": "tool_result", "tool_use_id": "t", "content": [block] * (bounds.MAX_PARTS - 1)}
    body = {"model": "m", "max_tokens": 5, "system": [block], "messages": [{"role": "user", "content": [result]}]}
    with pytest.raises(ApiError) as info:
        parse_messages(msgspec.json.encode(body))
    assert (info.value.body.param, info.value.body.code) == ("messages[0].content[0].content", "array_above_max_length")


def test_tool_calls_in_the_history_count_as_parts():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
    messages = [{"role": "assistant", "tool_calls": [call] * (bounds.MAX_PARTS + 1)}]
    with pytest.raises(ApiError) as info:
        parse_chat(msgspec.json.encode({"model": "m", "messages": messages}))
    assert (info.value.body.param, info.value.body.code) == ("messages[0].tool_calls", "array_above_max_length")


# -- tools: chat completions at most 128 (OpenAI's own 400), Responses and Anthropic MAX_TOOLS_OTHER --

FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
TOOL_DOORS = [
    (
        bounds.MAX_TOOLS,
        lambda tools: parse_chat(msgspec.json.encode({"model": "m", "messages": [MESSAGE], "tools": tools})),
        FUNCTION,
    ),
    (
        bounds.MAX_TOOLS_OTHER,
        lambda tools: parse_create(msgspec.json.encode({"model": "m", "input": "hi", "tools": tools})),
        {"type": "function", "name": "f"},
    ),
    (
        bounds.MAX_TOOLS_OTHER,
        lambda tools: parse_messages(
            msgspec.json.encode({"model": "m", "max_tokens": 5, "messages": [MESSAGE], "tools": tools})
        ),
        {"name": "f", "input_schema": {"type": "object"}},
    ),
]


@pytest.mark.parametrize(("most", "parse", "tool"), TOOL_DOORS)
@pytest.mark.parametrize("padding", [0, decoding.COUNT_ITEMS_OVER], ids=["small", "large"])
def test_one_tool_past_the_cap_is_openais_400(most, parse, tool, padding):
    tool = {**tool, "description": "d" * (padding // most)}  # a large body is counted before its decode
    parse([tool] * most)
    with pytest.raises(ApiError) as info:
        parse([tool] * (most + 1))
    err = info.value
    assert (err.status, err.body.param, err.body.code) == (400, "tools", "array_above_max_length")
    assert err.body.message == (
        f"Invalid 'tools': array too long. Expected an array with maximum length {most}, but got an array with "
        f"length {most + 1} instead."
    )


def test_logit_bias_of_more_token_ids_than_the_cap_is_refused_before_its_decode(monkeypatch):
    """2,000,000 token ids held the event loop ~0.9 s in the typed decode: now counted (by their colons) first
    (200,000 here: more are past json_values.MAX_VALUES, refused before the count)."""
    from multihome.schema import chat

    body = {"model": "m", "messages": [MESSAGE]}
    parse_chat(msgspec.json.encode({**body, "logit_bias": {str(i): 1 for i in range(bounds.MAX_LOGIT_BIAS)}}))
    monkeypatch.setattr(chat, "_typed", _Refusing(chat._typed))
    with pytest.raises(ApiError) as info:
        parse_chat(msgspec.json.encode({**body, "logit_bias": {str(i): 1 for i in range(200_000)}}))
    assert (info.value.body.param, info.value.body.code) == ("logit_bias", "object_above_max_properties")


@pytest.mark.parametrize(
    "parse",
    [
        lambda metadata: parse_create(msgspec.json.encode({"model": "m", "input": "hi", "metadata": metadata})),
        lambda metadata: parse_create_conversation(msgspec.json.encode({"metadata": metadata})),
        lambda metadata: parse_update_conversation(msgspec.json.encode({"metadata": metadata})),
        # Chat's `metadata`, typed since 50cb81d, was decoded whole: 1,400,000 entries held the loop ~1.8 s.
        lambda metadata: parse_chat(msgspec.json.encode({"model": "m", "messages": [MESSAGE], "metadata": metadata})),
        lambda metadata: parse_chat(
            msgspec.json.encode({"model": "m", "messages": [MESSAGE], "metadata": metadata}),
            tools=bounds.MAX_TOOLS_OTHER,  # the chat request a Responses turn or an Anthropic message becomes
        ),
    ],
)
def test_metadata_past_what_its_rule_allows_is_refused_by_its_size(parse, monkeypatch):
    from multihome.schema import chat, responses

    parse({f"k{i}": "\u2028" * 512 for i in range(16)})  # the largest metadata the rule allows
    for name in ("_create", "_create_conv", "_update_conv"):
        monkeypatch.setattr(responses, name, _Refusing(getattr(responses, name)))
    for name in ("_typed", "_translated"):
        monkeypatch.setattr(chat, name, _Refusing(getattr(chat, name)))
    with pytest.raises(ApiError) as info:
        parse({str(i): "" for i in range(200_000)})  # (within json_values.MAX_VALUES)
    assert info.value.body.param == "metadata" and "at most 16 pairs" in info.value.body.message


def test_fields_taken_whole_are_held_to_a_size_before_the_typed_decode(monkeypatch):
    """An `mcp` tool's `headers` (and the other fields the Responses door decodes whole, of any shape) of
    1,500,000 entries held the event loop ~2 s in the typed decode: refused by its size first."""
    from multihome.schema import responses

    many = {str(i): "" for i in range(200_000)}  # (within json_values.MAX_VALUES)
    tool = {"type": "mcp", "server_label": "s", "server_url": "https://mcp.example.com/mcp"}
    call = {"type": "mcp_call", "id": "mcp_1", "server_label": "s", "name": "n", "arguments": "{}", "output": "x"}
    listed = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "s"}
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(40)}}
    # A listing of 200 tools with their schemas (~300 KiB) is taken.
    parse_create(
        msgspec.json.encode(
            {"model": "m", "input": [{**listed, "tools": [{"name": "t", "input_schema": schema}] * 200}]}
        )
    )
    monkeypatch.setattr(responses, "_create", _Refusing(responses._create))
    cases = {
        "tools[0].headers": {"model": "m", "input": "hi", "tools": [{**tool, "headers": many}]},
        "tools[1].allowed_tools": {"model": "m", "input": "hi", "tools": [tool, {**tool, "allowed_tools": list(many)}]},
        "input[1].error": {"model": "m", "input": [call, {**call, "error": many}]},
        "input[0].tools": {"model": "m", "input": [{**listed, "tools": [many]}]},
    }
    for param, body in cases.items():
        with pytest.raises(ApiError) as info:
            parse_create(msgspec.json.encode(body))
        assert (info.value.status, info.value.body.param, info.value.body.code) == (400, param, "value_too_large")
