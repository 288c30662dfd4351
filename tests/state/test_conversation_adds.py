"""An add of conversation items checked against what the caller read (`append_items`' `expect_end`), on SQLite
and PostgreSQL: refused, with nothing added, when another add committed since the read; of concurrent adds
each checked against one read, only one commits (the conversations API then checks the others again)."""

from __future__ import annotations

import asyncio

import pytest

from multihome.state import StateStore
from multihome.state.bound import ConversationChanged

pytestmark = pytest.mark.anyio


def _item(i: int) -> dict:
    return {"id": f"msg_{i}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}


async def _ids(store: StateStore, conv: str) -> list[str]:
    page = await store.items("t1", conv)
    assert page is not None
    return [i["id"] for i in page.items]


async def test_an_add_checked_against_a_read_is_refused_when_another_came_in_between(state):
    await state.create_conversation("t1", "conv_e", {}, [_item(0)])
    read = await state.items("t1", "conv_e")
    assert read.end == 1
    assert await state.append_items("t1", "conv_e", [_item(1)], expect_end=read.end)
    with pytest.raises(ConversationChanged):
        await state.append_items("t1", "conv_e", [_item(2)], expect_end=read.end)
    assert await _ids(state, "conv_e") == ["msg_0", "msg_1"]


async def test_a_delete_between_a_read_and_an_add_refuses_the_add(state):
    """A result checked against its call, then the call deleted before the result is added: the add must be
    checked again (the delete moves the end on; positions keep their order)."""
    await state.create_conversation("t1", "conv_d", {}, [_item(0), _item(1)])
    read = await state.items("t1", "conv_d")
    assert read.end == 2
    assert await state.delete_item("t1", "conv_d", "msg_0")
    with pytest.raises(ConversationChanged):
        await state.append_items("t1", "conv_d", [_item(2)], expect_end=read.end)
    again = await state.items("t1", "conv_d")
    assert (again.end, again.count) == (3, 1)
    assert await state.append_items("t1", "conv_d", [_item(2)], expect_end=again.end)
    assert await _ids(state, "conv_d") == ["msg_1", "msg_2"]


async def test_of_concurrent_adds_checked_against_one_read_only_one_is_added(state):
    """Each task reads, then adds expecting what it read (as the conversations API adds a call's result):
    they all read before any adds, and only one's add commits."""
    await state.create_conversation("t1", "conv_c", {}, [])
    reads = await asyncio.gather(*(state.items("t1", "conv_c") for _ in range(4)))

    async def add(n: int) -> str:
        try:
            await state.append_items("t1", "conv_c", [_item(10 + n)], expect_end=reads[n].end)
        except ConversationChanged:
            return "changed"
        return "added"

    outcomes = await asyncio.gather(*(add(n) for n in range(4)))
    assert sorted(outcomes) == ["added", "changed", "changed", "changed"]
    assert len(await _ids(state, "conv_c")) == 1
