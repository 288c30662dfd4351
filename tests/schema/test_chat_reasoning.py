"""The reasoning fields of a chat request (docs/translation/reasoning.md): `reasoning_effort` and an
assistant message's `thinking_blocks`, refused with a 400 that names the field when malformed."""

from __future__ import annotations

import msgspec
import pytest

from multihome.schema.chat import parse_chat
from multihome.schema.errors import ApiError

USER = {"role": "user", "content": "hi"}
SIGNED = {"type": "thinking", "thinking": "t", "signature": "s"}


def _parse(*messages: dict, **extra) -> object:
    return parse_chat(msgspec.json.encode({"model": "g", "messages": list(messages), **extra}))


def test_signed_and_redacted_blocks_are_read():
    parsed = _parse(
        USER,
        {"role": "assistant", "content": "x", "thinking_blocks": [SIGNED, {"type": "redacted_thinking", "data": "d"}]},
        USER,
    )
    blocks = parsed.request.messages[1].thinking_blocks
    assert [(b.type, b.signature, b.data) for b in blocks] == [
        ("thinking", "s", None),
        ("redacted_thinking", None, "d"),
    ]


@pytest.mark.parametrize(
    "message, extra, words",
    [
        ({"role": "assistant", "content": "x", "thinking_blocks": "oops"}, {}, "messages[0].thinking_blocks"),
        (
            {"role": "assistant", "content": "x", "thinking_blocks": [{"type": "thinking"}]},
            {},
            "needs 'thinking' and its 'signature'",
        ),
        (
            {"role": "assistant", "content": "x", "thinking_blocks": [{"type": "redacted_thinking"}]},
            {},
            "needs its 'data'",
        ),
        (
            {"role": "assistant", "content": "x", "thinking_blocks": [{"type": "dream"}]},
            {},
            "must be 'thinking' or 'redacted_thinking'",
        ),
        ({"role": "user", "content": "x", "thinking_blocks": [SIGNED]}, {}, "assistant messages only"),
        (USER, {"reasoning_effort": "maximum"}, "'reasoning_effort' must be one of"),
        (USER, {"reasoning_effort": 3}, "reasoning_effort"),
    ],
)
def test_malformed_reasoning_is_a_400_naming_the_field(message, extra, words):
    with pytest.raises(ApiError) as err:
        _parse(message, USER, **extra)
    assert err.value.status == 400 and words in err.value.body.message
