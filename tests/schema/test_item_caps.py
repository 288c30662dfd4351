"""A request's items (chat and Anthropic `messages`, Responses `input`) are capped at bounds.MAX_ITEMS:
beyond it, OpenAI's 400 for a too-long array, before any per-item work (docs/hostile-input.md)."""

import msgspec
import pytest

from multihome.schema import bounds, decoding
from multihome.schema.anthropic import parse_messages
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_create

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
        parse([MESSAGE] * 200_000 + [{"role": 5}])
    assert info.value.body.code == "array_above_max_length"
    assert "length 200001" in info.value.body.message


@pytest.mark.parametrize(("param", "parse"), DOORS)
def test_the_tightest_array_past_the_cap_is_counted(param, parse):
    # The shortest JSON values: MAX_ITEMS + 1 of them need more bytes than a body may have uncounted.
    assert len(msgspec.json.encode([0] * (bounds.MAX_ITEMS + 1))) > decoding.COUNT_ITEMS_OVER
    with pytest.raises(ApiError) as info:
        parse([0] * (bounds.MAX_ITEMS + 1))
    assert (info.value.body.param, info.value.body.code) == (param, "array_above_max_length")
