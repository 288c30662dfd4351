"""A conversation's bound (`responses.conversations`, state/bound.py), on SQLite and PostgreSQL: an add that
would pass it is refused whole in its own transaction, a delete makes room, a turn's answer is appended
whatever its size, and the migration that adds the totals counts the conversations made before it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from multihome.config.responses import ConversationsConfig
from multihome.crypto import open_keyring
from multihome.state import StateStore, StoredResponse
from multihome.state.bound import ConversationFull
from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio


def _item(i: int, text: str = "x") -> dict:
    return {"id": f"msg_{i}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _size(item: dict) -> int:
    return len(msgspec.json.encode(item))  # what the store counts: the item's plaintext as sealed


@pytest.fixture
async def bounded(db_url, kms_config):
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    store = StateStore(engine, keyring, conversations=ConversationsConfig(max_items=5, max_bytes=4000))
    yield store
    await store.close()
    await keyring.close()
    await engine.dispose()


async def _ids(store: StateStore, conv: str) -> list[str]:
    page = await store.items("t1", conv)
    assert page is not None
    return [i["id"] for i in page.items]


async def test_an_add_past_the_item_bound_is_refused_whole_and_a_delete_makes_room(bounded):
    await bounded.create_conversation("t1", "conv_n", {}, [_item(0), _item(1), _item(2)])
    with pytest.raises(ConversationFull) as err:
        await bounded.append_items("t1", "conv_n", [_item(3), _item(4), _item(5)])
    assert (err.value.what, err.value.limit, err.value.would) == ("items", 5, 6)
    assert await _ids(bounded, "conv_n") == ["msg_0", "msg_1", "msg_2"]  # none of the three
    assert await bounded.append_items("t1", "conv_n", [_item(3), _item(4)])
    page = await bounded.items("t1", "conv_n")
    assert (page.count, page.size) == (5, sum(_size(i) for i in page.items))
    with pytest.raises(ConversationFull):
        await bounded.append_items("t1", "conv_n", [_item(5)])
    assert await bounded.delete_item("t1", "conv_n", "msg_1")
    assert not await bounded.delete_item("t1", "conv_n", "msg_1")  # counted once
    assert await bounded.append_items("t1", "conv_n", [_item(5)])
    assert await _ids(bounded, "conv_n") == ["msg_0", "msg_2", "msg_3", "msg_4", "msg_5"]
    with pytest.raises(ConversationFull):  # a new conversation too: not created at all
        await bounded.create_conversation("t1", "conv_big", {}, [_item(i) for i in range(6)])
    assert await bounded.get_conversation("t1", "conv_big") is None


async def test_an_add_past_the_byte_bound_is_refused_and_a_turn_is_appended_whatever_its_size(bounded):
    await bounded.create_conversation("t1", "conv_b", {}, [_item(0, "a" * 3000)])
    with pytest.raises(ConversationFull) as err:
        await bounded.append_items("t1", "conv_b", [_item(1, "b" * 1000)])
    first = _size(_item(0, "a" * 3000))
    assert (err.value.what, err.value.limit, err.value.would) == ("bytes", 4000, first + _size(_item(1, "b" * 1000)))
    assert await bounded.append_items("t1", "conv_b", [_item(1, "b" * 500)])
    # A turn's answer was served before it is stored: appended past the bound rather than lost.
    out = [_item(i, "c" * 1000) for i in range(2, 7)]
    turn = StoredResponse("resp_b", "t1", "completed", {"id": "resp_b", "output": out}, [], conversation_id="conv_b")
    await bounded.put_response(turn, out)
    page = await bounded.items("t1", "conv_b")
    assert page.count == 7 and page.size > 4000


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_migration_counts_the_items_of_conversations_made_before_it(kind, sqlite_database, pg_database):
    """Migration 0021 adds the totals: a conversation stored before it gets its items' count and bytes."""
    import datetime

    import sqlalchemy as sa

    from multihome.storage.migrate import migrate_sync

    db_url = sqlite_database(migrated=False) if kind == "sqlite" else pg_database(migrated=False)
    await asyncio.to_thread(migrate_sync, db_url, "0020")
    engine = create_engine(db_url)
    now = datetime.datetime.now(datetime.UTC)
    try:
        async with engine.begin() as conn:
            row = {"tenant_id": "t1", "created_at": now, "updated_at": now, "size": 1, "body": b"x"}
            await conn.execute(
                sa.text(
                    "INSERT INTO conversations (id, tenant_id, created_at, updated_at, "
                    "next_position, size, body) VALUES ('conv_old', :tenant_id, :created_at, "
                    ":updated_at, 3, :size, :body)"
                ),
                row,
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO conversations (id, tenant_id, created_at, updated_at, "
                    "next_position, size, body) VALUES ('conv_empty', :tenant_id, :created_at, "
                    ":updated_at, 0, :size, :body)"
                ),
                row,
            )
            for pos, size in ((0, 100), (2, 250)):
                await conn.execute(
                    sa.text(
                        "INSERT INTO conversation_items (conversation_id, position, id, tenant_id, created_at, "
                        "size, body) VALUES ('conv_old', :p, :id, 't1', :at, :size, :body)"
                    ),
                    {"p": pos, "id": f"msg_{pos}", "at": now, "size": size, "body": b"x"},
                )
        await asyncio.to_thread(migrate_sync, db_url)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(sa.text("SELECT id, item_count, item_bytes FROM conversations ORDER BY id"))
            ).all()
        assert [tuple(r) for r in rows] == [("conv_empty", 0, 0), ("conv_old", 2, 350)]
    finally:
        await engine.dispose()
