"""A tenant's conversations at most (`responses.conversations.per_tenant`, state/tenant_quota.py), on SQLite and
PostgreSQL: a create or an add that would pass the tenant's count or bytes is refused with nothing written,
another tenant is not held by it, a delete makes room at once on the replica that deleted, a tenant of its
own (`tenants`) has its own limits, a turn's items are not held to it, and a second replica (another store on
the same database) sees what the first wrote at its next reading."""

from __future__ import annotations

import asyncio
import gc
import time

import msgspec
import pytest

from multihome.config.responses import ConversationsConfig
from multihome.crypto import open_keyring
from multihome.state import StateStore
from multihome.state.tenant_quota import TenantQuota, TenantStorageFull
from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio


def _item(i: int, text: str = "x" * 100) -> dict:
    return {"id": f"msg_{i}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _size(item: dict) -> int:
    return len(msgspec.json.encode(item))  # what the store counts: the item's plaintext as sealed


EMPTY = len(msgspec.json.encode({"metadata": {}}))  # a conversation's own row: its sealed metadata
LIMITS = {"max_conversations": 3, "max_bytes": 3 * EMPTY + 4 * _size(_item(0))}


def _config(refresh_s: float = 30.0, **tenants: dict) -> ConversationsConfig:
    return msgspec.convert(
        {"per_tenant": LIMITS, "tenants": tenants, "per_tenant_refresh_s": refresh_s}, ConversationsConfig
    )


@pytest.fixture
async def stores(db_url, kms_config):
    """Two replicas' stores on one database: the first with the limits, the second too but reading at once."""
    made = []

    async def make(cfg: ConversationsConfig) -> StateStore:
        engine = create_engine(db_url)
        keyring = open_keyring(kms_config, engine)
        store = StateStore(engine, keyring, conversations=cfg)
        made.append((store, keyring, engine))
        return store

    yield make
    for store, keyring, engine in reversed(made):
        await store.close()
        await keyring.close()
        await engine.dispose()


async def test_a_tenant_past_its_count_or_bytes_is_refused_with_nothing_written(stores):
    store = await stores(_config())
    await store.create_conversation("t1", "conv_a", {}, [_item(0), _item(1)])
    await store.create_conversation("t1", "conv_b", {})
    assert await store.tenant_totals("t1") == (2, 2 * EMPTY + 2 * _size(_item(0)))
    with pytest.raises(TenantStorageFull) as err:  # bytes: 3 items more would pass it by one
        await store.create_conversation("t1", "conv_c", {}, [_item(2), _item(3), _item(4)])
    assert (err.value.what, err.value.limit) == ("bytes", LIMITS["max_bytes"])
    assert await store.get_conversation("t1", "conv_c") is None
    with pytest.raises(TenantStorageFull):  # an add to an existing one likewise
        await store.append_items("t1", "conv_b", [_item(2), _item(3), _item(4)])
    assert (await store.items("t1", "conv_b")).count == 0
    assert await store.append_items("t1", "conv_b", [_item(2), _item(3)])  # exactly at the limit: taken
    with pytest.raises(TenantStorageFull):
        await store.append_items("t1", "conv_b", [_item(4)])
    await store.create_conversation("t2", "conv_other", {}, [_item(0)])  # another tenant: not held by t1's
    assert await store.delete_item("t1", "conv_b", "msg_3")  # a delete makes room here at once
    assert await store.append_items("t1", "conv_b", [_item(4)])
    await store.create_conversation("t1", "conv_c", {})  # a third conversation: at the count
    with pytest.raises(TenantStorageFull) as err:
        await store.create_conversation("t1", "conv_d", {})
    assert (err.value.what, err.value.limit, err.value.would) == ("count", 3, 4)
    assert await store.delete_conversation("t1", "conv_a")
    await store.create_conversation("t1", "conv_d", {})
    assert (await store.tenant_totals("t1"))[0] == 3


async def test_a_tenant_of_its_own_has_its_own_limits_and_none_is_unlimited(stores):
    store = await stores(_config(big={"max_conversations": None, "max_bytes": None}, small={"max_conversations": 1}))
    for i in range(5):
        await store.create_conversation("big", f"conv_big{i}", {}, [_item(j) for j in range(5)])
    await store.create_conversation("small", "conv_s1", {})
    with pytest.raises(TenantStorageFull):
        await store.create_conversation("small", "conv_s2", {})


async def test_a_turns_items_are_not_held_to_the_tenants_limit(stores):
    store = await stores(_config())
    await store.create_conversation("t1", "conv_a", {}, [_item(0), _item(1), _item(2), _item(3)])
    with pytest.raises(TenantStorageFull):
        await store.append_items("t1", "conv_a", [_item(4)])
    # A turn's input and answer (`response_id`): metered upstream, its answer never lost.
    assert await store.append_items("t1", "conv_a", [_item(4), _item(5)], counted=1, response_id="resp_1")
    assert (await store.items("t1", "conv_a")).count == 6


async def test_another_replica_sees_what_one_wrote_at_its_next_reading(stores):
    first = await stores(_config())
    second = await stores(_config(refresh_s=0.001))  # reads the totals at each write
    await first.create_conversation("t1", "conv_a", {})
    await first.create_conversation("t1", "conv_b", {})
    await second.create_conversation("t1", "conv_c", {})
    with pytest.raises(TenantStorageFull):
        await second.create_conversation("t1", "conv_d", {})
    # The first read its totals at its first write and counts its own since: the second's is not in them
    # until its next reading (30 s here): the documented overshoot of one refresh interval.
    await first.create_conversation("t1", "conv_d", {})
    assert (await first.tenant_totals("t1"))[0] == 4


async def test_concurrent_writes_on_one_replica_cannot_pass_the_limit_together(stores):
    store = await stores(_config(small={"max_conversations": 2}))
    await store.create_conversation("small", "conv_0", {})  # the tenant's totals read: one held
    made = await asyncio.gather(
        *(store.create_conversation("small", f"conv_{i}", {}) for i in range(1, 6)), return_exceptions=True
    )
    assert sum(not isinstance(m, BaseException) for m in made) == 1, made
    assert all(isinstance(m, TenantStorageFull) for m in made if isinstance(m, BaseException)), made
    assert (await store.tenant_totals("small"))[0] == 2


async def test_a_delete_makes_room_without_reading_the_tenants_totals_again(stores):
    store = await stores(_config())
    reads = []
    read = store.quota._read

    async def counted(tenant: str) -> tuple[int, int]:
        reads.append(tenant)
        return await read(tenant)

    store.quota._read = counted
    await store.create_conversation("t1", "conv_a", {}, [_item(0), _item(1), _item(2)])
    await store.create_conversation("t1", "conv_b", {}, [_item(3)])
    for i in range(4, 10):  # a tenant at its limit deleting and adding in turn: no aggregate each write
        with pytest.raises(TenantStorageFull):
            await store.append_items("t1", "conv_b", [_item(i)])
        assert await store.delete_item("t1", "conv_b", f"msg_{i - 1}")
        assert await store.append_items("t1", "conv_b", [_item(i)])
    assert await store.delete_conversation("t1", "conv_a")
    assert not await store.delete_conversation("t1", "conv_a")  # gone already: frees nothing
    await store.create_conversation("t1", "conv_c", {}, [_item(1), _item(2), _item(3)])  # conv_a's room
    with pytest.raises(TenantStorageFull):
        await store.create_conversation("t1", "conv_d", {}, [_item(4)])
    assert reads == ["t1"]
    assert await store.tenant_totals("t1") == (2, 2 * EMPTY + 4 * _size(_item(0)))


class _Reads:
    """A tenant's totals read on demand: each read waits until the test lets it end (`answer` or `fail`)."""

    def __init__(self) -> None:
        self.started = 0
        self._answers: asyncio.Queue = asyncio.Queue()

    async def __call__(self, tenant: str) -> tuple[int, int]:
        self.started += 1
        answer = await self._answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def answer(self, totals: tuple[int, int] | BaseException) -> None:
        self._answers.put_nowait(totals)


async def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_write_committed_while_the_totals_are_read_is_counted_on_top_of_them():
    reads = _Reads()
    quota = TenantQuota(lambda _: (2, None), reads, 30.0)
    first = asyncio.ensure_future(quota.holding("t1", 1, 0).__aenter__())
    await _until(lambda: reads.started == 1, "the totals were never read")
    quota.added("t1", 1, 0)  # another write of this replica's commits meanwhile, after the read's snapshot
    reads.answer((0, 0))
    await first
    with pytest.raises(TenantStorageFull):  # 1 committed + 1 held + 1 more: past 2
        async with quota.holding("t1", 1, 0):
            pass


async def test_a_delete_while_the_totals_are_read_has_them_read_again_at_the_next_write():
    reads = _Reads()
    quota = TenantQuota(lambda _: (2, None), reads, 30.0)
    first = asyncio.ensure_future(quota.holding("t1", 0, 1).__aenter__())
    await _until(lambda: reads.started == 1, "the totals were never read")
    quota.removed("t1", 1, 10)  # the reading may have been taken before the delete
    reads.answer((2, 10))
    await first  # (bytes: no limit; the stale reading serves the write that waited for it)
    reads.answer((1, 0))
    async with quota.holding("t1", 1, 0):  # read again: room for one
        pass
    assert reads.started == 2


async def test_a_failed_reading_is_neither_kept_nor_left_unretrieved():
    reads = _Reads()
    quota = TenantQuota(lambda _: (2, None), reads, 30.0)
    unhandled = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    try:
        waiter = asyncio.ensure_future(quota.holding("t1", 1, 0).__aenter__())
        await _until(lambda: reads.started == 1, "the totals were never read")
        waiter.cancel()  # its client went: the reading goes on, and fails with no one waiting
        reads.answer(OSError("database unavailable"))
        await _until(lambda: not quota._reading, "the failed reading never ended")
        del waiter
        gc.collect()
        assert unhandled == []
        reads.answer((0, 0))  # the next write reads again, and is admitted
        async with quota.holding("t1", 1, 0):
            pass
    finally:
        loop.set_exception_handler(None)
