"""A turn's append to its conversation (`put_response` with `append`), on SQLite and PostgreSQL, decided in its
own transaction against what the conversation holds when it commits, not when the turn began: with
`expect_end` it is refused whole (ConversationChanged, nothing stored) if items were added since its input was
checked; with `counted` its input must still fit the bound, so concurrent turns cannot take the conversation
past it by more than one turn's answer (what a single turn may already do: its answer is never lost)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from multihome.config.responses import ConversationsConfig
from multihome.crypto import open_keyring
from multihome.state import StateStore, StoredResponse
from multihome.state.bound import ConversationChanged, ConversationFull
from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio


def _msg(item_id: str, text: str = "x") -> dict:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _call(item_id: str, call_id: str) -> dict:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def _result(item_id: str, call_id: str) -> dict:
    return {"id": item_id, "type": "function_call_output", "call_id": call_id, "output": "sunny"}


def _turn(rid: str, conv: str, new: list[dict], answer: list[dict]) -> StoredResponse:
    response = {"id": rid, "object": "response", "status": "completed", "output": answer}
    return StoredResponse(rid, "t1", "completed", response, new, conversation_id=conv)


async def _items(store: StateStore, conv: str) -> list[dict]:
    page = await store.items("t1", conv)
    assert page is not None
    return page.items


async def test_a_turn_is_refused_whole_when_an_add_came_in_between_its_check_and_its_append(state):
    """As a Responses turn answering call_1 while a Conversations add answers it too: the add committed first,
    so the turn (checked against the conversation before the add) stores nothing, not a second result."""
    await state.create_conversation("t1", "conv_t", {}, [_msg("msg_0"), _call("fc_1", "call_1")])
    read = await state.items("t1", "conv_t")
    assert read is not None and read.end == 2
    assert await state.append_items("t1", "conv_t", [_result("fco_a", "call_1")], expect_end=read.end)
    new = [_result("fco_b", "call_1")]
    turn = _turn("resp_t", "conv_t", new, [_msg("msg_ans")])
    with pytest.raises(ConversationChanged):
        await state.put_response(turn, [*new, _msg("msg_ans")], counted=len(new), expect_end=read.end)
    assert [i["id"] for i in await _items(state, "conv_t")] == ["msg_0", "fc_1", "fco_a"]
    assert await state.get_response("t1", "resp_t") is None  # nothing of the turn
    # Checked again against what is there now (the door's recheck), a turn that still fits is stored.
    now = await state.items("t1", "conv_t")
    await state.put_response(
        _turn("resp_u", "conv_t", [_msg("msg_q")], [_msg("msg_a")]),
        [_msg("msg_q"), _msg("msg_a")],
        counted=1,
        expect_end=now.end,
    )
    assert [i["id"] for i in await _items(state, "conv_t")][-2:] == ["msg_q", "msg_a"]


async def test_of_concurrent_turns_checked_against_one_read_only_one_is_stored(state):
    """Each turn answers call_1, checked against the same read (both passed the duplicate check): exactly one
    commits, the others are refused with nothing stored."""
    await state.create_conversation("t1", "conv_c", {}, [_call("fc_1", "call_1")])
    read = await state.items("t1", "conv_c")

    async def turn(n: int) -> str:
        new = [_result(f"fco_{n}", "call_1")]
        record = _turn(f"resp_c{n}", "conv_c", new, [_msg(f"msg_a{n}")])
        try:
            await state.put_response(record, [*new, _msg(f"msg_a{n}")], counted=1, expect_end=read.end)
        except ConversationChanged:
            return "changed"
        return "stored"

    outcomes = await asyncio.gather(*(turn(n) for n in range(4)))
    assert sorted(outcomes) == ["changed", "changed", "changed", "stored"]
    results = [i for i in await _items(state, "conv_c") if i["type"] == "function_call_output"]
    assert len(results) == 1
    stored = [n for n in range(4) if await state.get_response("t1", f"resp_c{n}") is not None]
    assert stored == [outcomes.index("stored")]


@pytest.fixture
async def bounded(db_url, kms_config):
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    store = StateStore(engine, keyring, conversations=ConversationsConfig(max_items=5, max_bytes=4000))
    yield store
    await store.close()
    await keyring.close()
    await engine.dispose()


async def test_concurrent_turns_that_each_fit_alone_do_not_take_the_conversation_past_its_bound(bounded):
    """Four turns of one input item and one answer item on a conversation of 2 of at most 5 items: each fits
    when checked alone (2 + 1 <= 5). Taken in commit order, as if one after another: the first makes 4, the
    second 6 (its input fitted: 4 + 1; its answer is kept past the bound), the others find it full."""
    await bounded.create_conversation("t1", "conv_b", {}, [_msg("msg_0"), _msg("msg_1")])

    async def turn(n: int) -> str:
        new = [_msg(f"msg_q{n}")]
        record = _turn(f"resp_b{n}", "conv_b", new, [_msg(f"msg_a{n}")])
        try:
            await bounded.put_response(record, [*new, _msg(f"msg_a{n}")], counted=1)
        except ConversationFull:
            return "full"
        return "stored"

    outcomes = await asyncio.gather(*(turn(n) for n in range(4)))
    assert sorted(outcomes) == ["full", "full", "stored", "stored"]
    page = await bounded.items("t1", "conv_b")
    assert page.count == 6 and len(page.items) == 6  # the bound (5) and one turn's answer, no more
    # Bytes the same way: an input that fits alone is refused once another turn's answer filled the bytes.
    await bounded.create_conversation("t1", "conv_y", {}, [])
    big = [_msg(f"msg_y{n}", "y" * 1500) for n in range(3)]

    async def sized(n: int) -> str:
        record = _turn(f"resp_y{n}", "conv_y", [big[n]], [_msg(f"msg_ya{n}", "z" * 1500)])
        try:
            await bounded.put_response(record, [big[n], _msg(f"msg_ya{n}", "z" * 1500)], counted=1)
        except ConversationFull as full:
            assert full.what == "bytes"
            return "full"
        return "stored"

    outcomes = await asyncio.gather(*(sized(n) for n in range(3)))
    assert sorted(outcomes) == ["full", "full", "stored"]
    page = await bounded.items("t1", "conv_y")
    answer = len(msgspec.json.encode(_msg("msg_ya0", "z" * 1500)))
    assert page.size <= 4000 + answer
