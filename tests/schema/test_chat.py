import msgspec
import pytest

from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError


def _parse(obj):
    return parse_chat(msgspec.json.encode(obj))


def test_needs_follow_the_request():
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert _parse(base).needs == {"chat"}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert _parse({**base, "tools": [tool]}).needs == {"chat", "tools"}
    assert _parse({**base, "tools": [tool], "tool_choice": "none"}).needs == {"chat"}
    assert _parse({**base, "stream": True}).needs == {"chat", "streaming"}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert _parse({**base, "response_format": fmt}).needs == {"chat", "json_schema"}
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
    assert _parse({**base, "messages": [image]}).needs == {"chat", "vision"}


def test_unknown_fields_are_kept_for_pass_through():
    parsed = _parse({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 5, "metadata": {"a": "b"}})
    assert bytes(parsed.raw["top_k"]) == b"5"
    assert msgspec.json.decode(parsed.raw["metadata"]) == {"a": "b"}


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools[0].function",
        ),
    ],
)
def test_semantic_errors_name_the_field(body, param):
    with pytest.raises(ApiError) as info:
        _parse(body)
    assert info.value.status == 400
    assert info.value.body.param == param


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "m"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_a_missing_required_field_is_named_as_openai_names_it(body, param):
    """OpenAI's 400 for a missing field names it (`param`, code `missing_required_parameter`); was: no param."""
    with pytest.raises(ApiError) as info:
        _parse(body)
    assert (info.value.status, info.value.body.param) == (400, param)
    assert info.value.body.code == "missing_required_parameter"
    assert f"'{param}'" in info.value.body.message


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"logprobs": "yes"}, "logprobs"),
        ({"store": "yes"}, "store"),
        ({"user": 5}, "user"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"safety_identifier": "s" * 65}, "safety_identifier"),
    ],
)
def test_fields_passed_through_are_still_held_to_openais_types(extra, param):
    """Was served: a translating adapter drops these, so a value OpenAI refuses reached no one who would."""
    with pytest.raises(ApiError) as info:
        _parse({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})
    assert (info.value.status, info.value.body.param) == (400, param)


def test_fields_passed_through_keep_their_bytes():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True, "metadata": {"a": "b"}}
    parsed = _parse({**body, "user": "u", "store": False, "safety_identifier": "s"})
    assert bytes(parsed.raw["logprobs"]) == b"true" and msgspec.json.decode(parsed.raw["metadata"]) == {"a": "b"}
