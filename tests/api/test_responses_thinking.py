"""Claude's signed thinking blocks carried in a Responses reasoning item's encrypted_content
(api/responses/thinking.py): written only for blocks that can go back, read back onto the assistant
turn they preceded, refused when forged under the gateway's prefix, never sent to a native upstream."""

from __future__ import annotations

import pytest

from multihome.api.responses.items import chat_messages
from multihome.api.responses.native import upstream_items
from multihome.api.responses.thinking import PREFIX, carried, carry
from multihome.schema.errors import ApiError

SIGNED = {"type": "thinking", "thinking": "The user said: hi.", "signature": "c2lnbmVk"}
REDACTED = {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}


def test_signed_and_redacted_blocks_round_trip_and_unsigned_ones_are_not_carried():
    sealed = carry([SIGNED, REDACTED, {"type": "thinking", "thinking": "gemini", "signature": ""}])
    assert sealed is not None and sealed.startswith(PREFIX)
    assert carried(sealed) == [SIGNED, REDACTED]
    assert carry([{"type": "thinking", "thinking": "unsigned", "signature": ""}]) is None
    assert carried("gAAAAB-openais-own-encrypted-reasoning") is None  # not ours: left alone


@pytest.mark.parametrize("forged", [PREFIX + "not base64!", PREFIX + "W10", PREFIX + "eyJ4IjoxfQ"])
def test_a_forged_carrier_is_a_400(forged):
    with pytest.raises(ApiError) as refused:
        carried(forged, "input[1].encrypted_content")
    assert refused.value.status == 400 and "input[1].encrypted_content" in refused.value.body.message


def test_the_blocks_open_the_assistant_turn_that_called_the_tool():
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": carry([SIGNED])}
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
    messages: list[dict] = []
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    chat_messages([user, reasoning, call], messages)
    turn = messages[1]
    assert (
        turn["role"] == "assistant" and turn["thinking_blocks"] == [SIGNED] and turn["tool_calls"][0]["id"] == "call_1"
    )


def test_a_native_upstream_never_gets_the_gateways_carrier():
    ours = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": carry([SIGNED])}
    theirs = {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAAB-opaque"}
    assert upstream_items([ours, theirs]) == [theirs]
