"""The state store on SQLite and PostgreSQL: what is stored comes back, chains rebuild oldest first,
another tenant finds nothing, deletes delete, and no stored row holds plaintext."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from multihome.state import StoredResponse
from multihome.storage.errors import Conflict, UnreadableRow
from multihome.storage.tables import conversation_items, conversations, responses

pytestmark = pytest.mark.anyio
MARKER = "PLAINTEXT-MARKER-state-7f3a"


def _response(rid: str, tenant: str = "t1", prev: str | None = None, conv: str | None = None) -> StoredResponse:
    msg = {"id": f"msg_{rid}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": MARKER}]}
    out = {"id": f"msg_o{rid}", "type": "message", "role": "assistant", "status": "completed", "content": []}
    return StoredResponse(
        id=rid,
        tenant=tenant,
        status="completed",
        response={"id": rid, "object": "response", "output": [out], "metadata": {"m": MARKER}},
        input=[msg],
        previous_response_id=prev,
        conversation_id=conv,
    )


async def test_a_response_comes_back_only_to_its_tenant(state):
    await state.put_response(_response("resp_a"))
    got = await state.get_response("t1", "resp_a")
    assert got is not None and got.input[0]["content"][0]["text"] == MARKER
    assert got.response["metadata"] == {"m": MARKER} and got.status == "completed"
    assert await state.get_response("t2", "resp_a") is None
    assert await state.chain("t2", "resp_a") is None
    assert not await state.delete_response("t2", "resp_a")
    assert await state.get_response("t1", "resp_a") is not None


async def test_a_chain_rebuilds_oldest_first_and_stops_at_a_deleted_link(state):
    await state.put_response(_response("resp_1"))
    await state.put_response(_response("resp_2", prev="resp_1"))
    await state.put_response(_response("resp_3", prev="resp_2"))
    await state.put_response(_response("resp_x", tenant="t2", prev="resp_2"))  # another tenant naming t1's id
    chain = await state.chain("t1", "resp_3")
    assert [r.id for r in chain] == ["resp_1", "resp_2", "resp_3"]
    assert [r.id for r in await state.chain("t2", "resp_x")] == ["resp_x"]  # t1's ancestors are not reached
    assert await state.delete_response("t1", "resp_2")
    assert await state.get_response("t1", "resp_2") is None
    assert [r.id for r in await state.chain("t1", "resp_3")] == ["resp_3"]


async def test_conversations_keep_items_in_order_with_cursor_pages(state):
    items = [
        {"id": f"msg_{i}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": str(i)}]}
        for i in range(5)
    ]
    conv = await state.create_conversation("t1", "conv_1", {"topic": MARKER}, items[:2])
    assert conv.metadata == {"topic": MARKER}
    assert await state.append_items("t1", "conv_1", items[2:])
    assert not await state.append_items("t2", "conv_1", items[:1])
    page = await state.items("t1", "conv_1", limit=2)
    assert [i["id"] for i in page.items] == ["msg_0", "msg_1"] and page.has_more
    page = await state.items("t1", "conv_1", after="msg_1", limit=10)
    assert [i["id"] for i in page.items] == ["msg_2", "msg_3", "msg_4"] and not page.has_more
    page = await state.items("t1", "conv_1", desc=True, after="msg_3", limit=2)
    assert [i["id"] for i in page.items] == ["msg_2", "msg_1"] and page.has_more
    assert await state.items("t2", "conv_1") is None
    assert await state.get_item("t1", "conv_1", "msg_3") == items[3]
    assert await state.get_item("t2", "conv_1", "msg_3") is None
    assert not await state.delete_item("t2", "conv_1", "msg_3")
    assert await state.delete_item("t1", "conv_1", "msg_3")
    assert [i["id"] for i in (await state.items("t1", "conv_1")).items] == ["msg_0", "msg_1", "msg_2", "msg_4"]
    assert (await state.update_conversation("t1", "conv_1", {"a": "b"})).metadata == {"a": "b"}
    assert await state.update_conversation("t2", "conv_1", {"a": "c"}) is None
    assert not await state.delete_conversation("t2", "conv_1")
    assert await state.delete_conversation("t1", "conv_1")
    assert await state.get_conversation("t1", "conv_1") is None
    async with state.engine.connect() as conn:
        assert (await conn.scalar(sa.select(sa.func.count()).select_from(conversation_items))) == 0


async def test_an_item_id_is_unique_in_its_conversation(state):
    await state.create_conversation("t1", "conv_u", {}, [{"id": "msg_1", "type": "message"}])
    with pytest.raises(Conflict):
        await state.append_items("t1", "conv_u", [{"id": "msg_1", "type": "message"}])
    with pytest.raises(Conflict):
        await state.put_response(_response("resp_u", conv="conv_u"), append=[{"id": "msg_1", "type": "message"}])
    assert await state.get_response("t1", "resp_u") is None
    assert [i["id"] for i in (await state.items("t1", "conv_u")).items] == ["msg_1"]


async def test_a_response_appends_its_turn_to_its_conversation_atomically(state):
    await state.create_conversation("t1", "conv_2", {})
    turn = [{"id": "msg_in", "type": "message", "role": "user", "content": []}]
    await state.put_response(_response("resp_c", conv="conv_2"), append=turn)
    assert [i["id"] for i in (await state.items("t1", "conv_2")).items] == ["msg_in"]
    await state.delete_conversation("t1", "conv_2")
    with pytest.raises(LookupError):
        await state.put_response(_response("resp_d", conv="conv_2"), append=turn)
    assert await state.get_response("t1", "resp_d") is None  # nothing half-written


async def test_rows_are_sealed_bound_to_their_row_and_hold_no_plaintext(state, db_url, tmp_path):
    await state.put_response(_response("resp_s"))
    await state.put_response(_response("resp_t"))
    await state.create_conversation("t1", "conv_s", {"k": MARKER}, [{"id": "msg_s", "type": "message", "x": MARKER}])
    async with state.engine.connect() as conn:
        for table in (responses, conversations, conversation_items):
            for row in (await conn.execute(sa.select(table))).all():
                assert MARKER.encode() not in bytes(row.body)
    async with state.engine.begin() as conn:  # a row's body copied onto another row does not open
        body = await conn.scalar(sa.select(responses.c.body).where(responses.c.id == "resp_s"))
        await conn.execute(sa.update(responses).where(responses.c.id == "resp_t").values(body=body))
    with pytest.raises(UnreadableRow, match="its body cannot be opened"):  # a 409 naming it, not a 500
        await state.get_response("t1", "resp_t")
    if db_url.startswith("sqlite"):
        await state.engine.dispose()
        path = db_url.split("///", 1)[1]
        blob = b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
    else:
        url = state.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        done = await asyncio.to_thread(subprocess.run, ["pg_dump", url], capture_output=True, check=True)
        blob = done.stdout
    assert MARKER.encode() not in blob


async def _delete_on_another_replica(db_url, kms_config, response_id: str) -> None:
    from multihome.crypto import open_keyring
    from multihome.state import StateStore
    from multihome.storage.engine import create_engine

    engine = create_engine(db_url)
    other = StateStore(engine, open_keyring(kms_config, engine))
    try:
        assert await other.delete_response("t1", response_id)
    finally:
        await other.keyring.close()
        await engine.dispose()


async def test_a_response_deleted_on_another_replica_is_not_rebuilt_from_memory(state, db_url, kms_config):
    await state.put_response(_response("resp_r1"))
    await state.put_response(_response("resp_r2", prev="resp_r1"))
    assert [r.id for r in await state.chain("t1", "resp_r2")] == ["resp_r1", "resp_r2"]  # both now in memory here
    await _delete_on_another_replica(db_url, kms_config, "resp_r1")
    assert [r.id for r in await state.chain("t1", "resp_r2")] == ["resp_r2"]
    assert await state.chain("t2", "resp_r2") is None  # memory never answers for another tenant


async def test_a_chain_held_in_memory_is_checked_on_the_loop_without_a_hop(state, db_url, kms_config, monkeypatch):
    """SQLite: continuing a chain this replica holds opened asks the database only whether its turns are all
    still there, on the loop's own connection (no reader thread); a turn another replica deleted still ends
    the chain there (the chain is then walked on a thread, and the deleted turn leaves this replica's memory)."""
    if state._threads is None:
        pytest.skip("PostgreSQL: every read goes through the driver")
    for i, prev in enumerate((None, "resp_h0", "resp_h1")):
        await state.put_response(_response(f"resp_h{i}", prev=prev))
    hops = []
    real = state._threads.read

    async def counted(work):
        hops.append(work)
        return await real(work)

    monkeypatch.setattr(state._threads, "read", counted)
    assert [r.id for r in await state.chain("t1", "resp_h2")] == ["resp_h0", "resp_h1", "resp_h2"]
    assert hops == []
    await _delete_on_another_replica(db_url, kms_config, "resp_h0")
    assert [r.id for r in await state.chain("t1", "resp_h2")] == ["resp_h1", "resp_h2"]
    assert len(hops) == 1
    assert not state._opened.holds("resp_h0") and state._opened.holds("resp_h1")
    assert await state.chain("t2", "resp_h2") is None  # memory never answers another tenant: read on a thread
    await state.put_response(_response("resp_h3", prev="resp_hX"))  # its ancestor is not held: read on a thread
    assert [r.id for r in await state.chain("t1", "resp_h3")] == ["resp_h3"]
    assert len(hops) == 3


async def test_every_deleted_response_moves_the_deletion_count(state, engine):
    """The migration's trigger counts each deleted row, whoever deletes it (SQLite: the only store that reads
    the count; PostgreSQL has no trigger, so concurrent deletes never queue on one shared row)."""
    from multihome.storage.tables import response_deletions

    async def count() -> int:
        async with engine.connect() as conn:
            return int(await conn.scalar(sa.select(response_deletions.c.n)))

    counted = 1 if state._threads is not None else 0
    before = await count()
    for i in range(3):
        await state.put_response(_response(f"resp_d{i}"))
    assert await state.delete_response("t1", "resp_d0")
    assert not await state.delete_response("t1", "resp_d0")
    assert await count() == before + counted
    async with engine.begin() as conn:  # by hand: counted too
        await conn.execute(sa.delete(responses).where(responses.c.id.in_(["resp_d1", "resp_d2"])))
    assert await count() == before + 3 * counted


async def test_a_held_chain_is_looked_up_by_its_ids_only_after_a_deletion(state, db_url, kms_config, monkeypatch):
    """SQLite: while nothing was deleted, a held chain's turns are not looked up again (one row read); a
    deletion anywhere moves the count, and the next turn looks its chain's ids up once more."""
    from multihome.state import store

    if state._threads is None:
        pytest.skip("PostgreSQL: every read goes through the driver")
    lookups = []
    real = store._sqlite_all_there

    def counted(raw, ids):
        lookups.append(list(ids))
        return real(raw, ids)

    monkeypatch.setattr(store, "_sqlite_all_there", counted)
    for i, prev in enumerate((None, "resp_g0", "resp_g1")):
        await state.put_response(_response(f"resp_g{i}", prev=prev))
    await state.put_response(_response("resp_other"))
    for _ in range(3):
        assert [r.id for r in await state.chain("t1", "resp_g2")] == ["resp_g0", "resp_g1", "resp_g2"]
    assert len(lookups) == 1  # the first time: the turns were stored before any count was read
    await _delete_on_another_replica(db_url, kms_config, "resp_other")  # not of this chain: it stays whole
    assert [r.id for r in await state.chain("t1", "resp_g2")] == ["resp_g0", "resp_g1", "resp_g2"]
    assert [r.id for r in await state.chain("t1", "resp_g2")] == ["resp_g0", "resp_g1", "resp_g2"]
    assert len(lookups) == 2
    await _delete_on_another_replica(db_url, kms_config, "resp_g0")
    assert [r.id for r in await state.chain("t1", "resp_g2")] == ["resp_g1", "resp_g2"]
    assert len(lookups) == 3


async def test_a_small_cache_still_rebuilds_every_chain(db_url, kms_config):
    from multihome.crypto import open_keyring
    from multihome.state import StateStore
    from multihome.storage.engine import create_engine

    engine = create_engine(db_url)
    small = StateStore(engine, open_keyring(kms_config, engine), cache_bytes=3000)  # about two responses
    try:
        prev = None
        for i in range(6):
            await small.put_response(_response(f"resp_s{i}", prev=prev))
            prev = f"resp_s{i}"
        chain = await small.chain("t1", "resp_s5")
        assert [r.id for r in chain] == [f"resp_s{i}" for i in range(6)]
        assert all(r.input[0]["content"][0]["text"] == MARKER for r in chain)
    finally:
        await small.keyring.close()
        await engine.dispose()


async def test_the_opened_cache_holds_about_the_memory_it_counts(db_url, kms_config):
    """The cache's bound is on what its records hold in memory, written or read: counting their plaintext
    size alone let short turns hold ~4.6x the bound."""
    import gc
    import tracemalloc

    from multihome.crypto import open_keyring
    from multihome.state import StateStore
    from multihome.storage.engine import create_engine

    engines = [create_engine(db_url), create_engine(db_url)]
    writer, reader = (StateStore(e, open_keyring(kms_config, e), cache_bytes=64 << 10) for e in engines)
    try:
        for store, fill in ((writer, True), (reader, False)):
            gc.collect()
            tracemalloc.start()
            try:
                prev = None
                for i in range(150):
                    if fill:
                        await store.put_response(_response(f"resp_m{i}", prev=prev))
                    else:
                        assert await store.get_response("t1", f"resp_m{i}") is not None
                        await store.chain("t1", f"resp_m{i}")
                    prev = f"resp_m{i}"
                gc.collect()
                held, _ = tracemalloc.get_traced_memory()
                counted = store._opened._bytes
                store._opened._items.clear()
                gc.collect()
                without, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert 0 < counted <= store._opened.max_bytes
            assert held - without < 1.5 * store._opened.max_bytes, (fill, held - without, counted)
    finally:
        for store in (writer, reader):
            await store.close()
            await store.keyring.close()
        for e in engines:
            await e.dispose()


async def test_a_replica_that_opened_nothing_rebuilds_the_same_chain(state, db_url, kms_config):
    """Another replica (its cache empty) reads every row of the chain: the records are the ones stored,
    created_at included (on SQLite these rows are read on the driver's own connection)."""
    from multihome.crypto import open_keyring
    from multihome.state import StateStore
    from multihome.storage.engine import create_engine

    prev = None
    for i in range(4):
        await state.put_response(_response(f"resp_c{i}", prev=prev, tenant="t1"))
        prev = f"resp_c{i}"
    mine = await state.chain("t1", "resp_c3")
    engine = create_engine(db_url)
    cold = StateStore(engine, open_keyring(kms_config, engine))
    try:
        theirs = await cold.chain("t1", "resp_c3")
        assert await cold.chain("t2", "resp_c3") is None
    finally:
        await cold.close()
        await cold.keyring.close()
        await engine.dispose()
    assert theirs is not None and mine is not None

    def view(r):
        return (r.id, r.tenant, r.status, r.response, r.input, r.previous_response_id, r.created_at)

    assert [view(r) for r in theirs] == [view(await state.get_response("t1", r.id)) for r in mine]
    assert all(r.created_at.tzinfo is not None for r in theirs)
