"""The memory store on SQLite and PostgreSQL: records come back only to their tenant, hybrid search
finds what was written (on another replica too), filters and TTLs hold, deletes and "forget a user"
really delete, and no row holds a record's text or metadata."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from multihome.crypto import open_keyring
from multihome.state.memory import MemoryStore, NewRecord, WordLlamaEmbedder, compile_filter
from multihome.storage.engine import create_engine
from multihome.storage.tables import memory_namespaces, memory_records, memory_tombstones
from pg import stored_bytes

pytestmark = pytest.mark.anyio
MARKER = "PLAINTEXT-MARKER-memory-5c1e"
_MODEL: list[WordLlamaEmbedder] = []


def embedder() -> WordLlamaEmbedder:
    if not _MODEL:  # loaded once for the module: the weights take ~0.5 s to read
        _MODEL.append(WordLlamaEmbedder())
    return _MODEL[0]


@pytest.fixture
async def stores(db_url, kms_config):
    """Two replicas' stores on one database, each with its own keyring and in-memory indexes."""
    made = []
    for _ in range(2):
        engine = create_engine(db_url)
        keyring = open_keyring(kms_config, engine)
        made.append((MemoryStore(engine, keyring, embedder), keyring, engine))
    yield [m[0] for m in made]
    for store, keyring, engine in made:
        await store.close()
        await keyring.close()
        await engine.dispose()


@pytest.fixture
def memory(stores):
    return stores[0]


FACTS = [
    "The user's dog is a beagle named Biscuit.",
    "The user is allergic to peanuts.",
    "The user's sister lives in Lisbon and works as an architect.",
    "The user prefers window seats on long flights.",
    "The user's favourite dessert is lemon tart.",
]


async def _write(memory, texts, tenant="t1", agent="support", user="u1", **meta):
    return await memory.write(tenant, agent, user, [NewRecord(t, dict(meta)) for t in texts])


async def test_a_record_comes_back_only_to_its_tenant(memory):
    [rec] = await _write(memory, [f"{MARKER} likes jazz"], topic="music")
    got = await memory.get("t1", rec.id)
    assert got is not None and got.text == f"{MARKER} likes jazz" and got.metadata == {"topic": "music"}
    assert (got.agent_id, got.user_id) == ("support", "u1")
    assert await memory.get("t2", rec.id) is None
    assert await memory.page("t2", "support", "u1") is None
    assert await memory.search("t2", "support", "u1", "jazz") == []
    assert not await memory.delete("t2", rec.id)
    assert await memory.get("t1", rec.id) is not None
    assert [n.records for n in await memory.namespaces("t2", 1000)] == []
    assert [(n.agent_id, n.user_id, n.records) for n in await memory.namespaces("t1", 1000)] == [("support", "u1", 1)]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
async def test_search_finds_the_record_that_answers(memory, mode):
    await _write(memory, FACTS)
    await _write(memory, ["The user's dog is called Rex."], user="u2")  # another namespace: never returned
    hits = await memory.search("t1", "support", "u1", "what is the name of my dog?", top_k=3, mode=mode)
    assert hits and hits[0].record.text == FACTS[0], [h.record.text for h in hits]
    assert len(hits) <= 3 and all(h.record.user_id == "u1" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_metadata_filters_narrow_the_search(memory):
    await _write(memory, ["Trip to Kyoto booked for April."], kind="travel", year=2026)
    await _write(memory, ["Trip to Oslo booked for May."], kind="travel", year=2025)
    await _write(memory, ["Bought a new kettle."], kind="shopping", year=2026)

    async def texts(filters):
        hits = await memory.search("t1", "support", "u1", "trip booked", top_k=10, keep=compile_filter(filters))
        return sorted(h.record.text for h in hits)

    assert await texts({"kind": "travel", "year": {"gte": 2026}}) == ["Trip to Kyoto booked for April."]
    assert await texts({"OR": [{"kind": "shopping"}, {"year": 2025}]}) == [
        "Bought a new kettle.",
        "Trip to Oslo booked for May.",
    ]
    assert await texts({"kind": {"nin": ["travel"]}}) == ["Bought a new kettle."]
    assert await texts({"missing": "x"}) == []
    page, more = await memory.page("t1", "support", "u1", keep=compile_filter({"kind": "travel"}), limit=1)
    assert len(page) == 1 and more


@pytest.mark.parametrize(
    "bad",
    [[], {"a": {"like": 1}}, {"a": {"in": []}}, {"a": {"eq": {"x": 1}}}, {"OR": {}}, {"a": {}}],
)
def test_a_bad_filter_is_refused_with_its_place(bad):
    with pytest.raises(ValueError, match="filters"):
        compile_filter(bad)


async def test_list_pages_newest_first_with_a_cursor(memory):
    written = await _write(memory, [f"note {i}" for i in range(5)])
    page, more = await memory.page("t1", "support", "u1", limit=2)
    assert [r.text for r in page] == ["note 4", "note 3"] and more
    page, more = await memory.page("t1", "support", "u1", limit=10, after=page[-1].id)
    assert [r.text for r in page] == ["note 2", "note 1", "note 0"] and not more
    page, _ = await memory.page("t1", "support", "u1", limit=2, desc=False, after=written[0].id)
    assert [r.text for r in page] == ["note 1", "note 2"]
    with pytest.raises(KeyError):
        await memory.page("t1", "support", "u1", after="mem_unknown")


async def test_another_replica_sees_writes_and_deletes(stores):
    a, b = stores
    [first] = await _write(a, [FACTS[0]])
    assert [h.record.id for h in await b.search("t1", "support", "u1", "dog name")] == [first.id]
    [second] = await _write(a, [FACTS[1]])
    assert await a.delete("t1", first.id)
    found = [h.record.id for h in await b.search("t1", "support", "u1", "dog name peanuts", top_k=5)]
    assert found == [second.id]


async def test_search_goes_on_after_the_database_restarted(stores, request):
    if stores[0].engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL server restart")
    a, b = stores
    [first] = await _write(a, [FACTS[0]])
    assert [h.record.id for h in await b.search("t1", "support", "u1", "dog name")] == [first.id]
    server = request.getfixturevalue("pg_server")
    server.pause()  # ends every connection, the ones b's searches hold too
    server.resume()
    [second] = await _write(a, [FACTS[1]])
    found = [h.record.id for h in await b.search("t1", "support", "u1", "dog name peanuts", top_k=5)]
    assert sorted(found) == sorted([first.id, second.id])


async def test_ttl_hides_then_the_sweep_deletes(memory, engine):
    [kept] = await memory.write("t1", "a", "u", [NewRecord("The office is on floor 3.", {})])
    assert kept.expires_at is None
    # Found while live: a short TTL, longer if a busy machine took more than it to write and search.
    for tries, ttl in enumerate((1, 5, 30), 1):
        [short] = await memory.write("t1", "a", "u", [NewRecord("The parking code is 4711.", {}, ttl_s=ttl)])
        assert short.expires_at is not None
        found = [h.record.id for h in await memory.search("t1", "a", "u", "parking code")]
        if datetime.now(UTC) < short.expires_at:
            assert found[0] == short.id
            break
    else:
        raise AssertionError("no record lived long enough to be searched once")
    deadline = time.monotonic() + 60
    while await memory.get("t1", short.id) is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert short.id not in [h.record.id for h in await memory.search("t1", "a", "u", "parking code")]
    assert [r.id for r in (await memory.page("t1", "a", "u"))[0]] == [kept.id]
    assert await memory.sweep() == tries  # each expired one (the shorter ones expired first)
    async with engine.connect() as conn:
        ids = (await conn.execute(sa.select(memory_records.c.id))).scalars().all()
    assert ids == [kept.id]


async def test_a_namespace_ttl_applies_to_records_written_after(memory):
    ns = await memory.set_namespace("t1", "a", "u", 3600)
    assert ns.default_ttl_s == 3600 and ns.records == 0
    [rec] = await memory.write("t1", "a", "u", [NewRecord("x", {})])
    [own] = await memory.write("t1", "a", "u", [NewRecord("y", {}, ttl_s=60)])
    assert rec.expires_at is not None and 3590 < (rec.expires_at - rec.created_at).total_seconds() <= 3600
    assert own.expires_at is not None and (own.expires_at - own.created_at).total_seconds() == 60


async def test_a_namespace_deleted_right_after_it_was_set_still_answers_what_was_set(stores, monkeypatch):
    """The answer is read in the transaction that sets the TTL: a delete committed just after it (another
    replica's, or a forget-user of the same gateway) left the read after it nothing (an IndexError: a 500)."""
    mine, other = stores
    write = mine._write

    @contextlib.asynccontextmanager
    async def then_deleted(*args, **kwargs):
        async with write(*args, **kwargs) as conn:
            yield conn
        assert await other.delete_namespace("t1", "a", "u") == 0

    monkeypatch.setattr(mine, "_write", then_deleted)
    ns = await mine.set_namespace("t1", "a", "u", 60)
    assert (ns.agent_id, ns.user_id, ns.default_ttl_s, ns.records) == ("a", "u", 60, 0)
    assert await other.namespaces("t1", 1000, agent_id="a") == []


async def test_a_namespace_deleted_between_its_read_and_its_ttl_update_is_made_again(stores, db_url, monkeypatch):
    """PostgreSQL (READ COMMITTED, no lock on the read): a forget-user committed between the namespace's read
    and the TTL's update left the update nothing to change and the answer nothing to read (NotFound: a 500).
    SQLite's write lock keeps the delete out of that gap."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite holds the database write lock from the read on: the delete waits")
    mine, other = stores
    await mine.set_namespace("t1", "a", "u", 30)
    read = mine._namespace
    calls = 0

    async def then_forgotten(*args, **kwargs):
        nonlocal calls
        found = await read(*args, **kwargs)
        calls += 1
        if calls == 1:
            assert await other.forget_user("t1", "u") == (1, 0)
        return found

    monkeypatch.setattr(mine, "_namespace", then_forgotten)
    ns = await mine.set_namespace("t1", "a", "u", 60)
    assert (ns.agent_id, ns.user_id, ns.default_ttl_s) == ("a", "u", 60)
    [listed] = await other.namespaces("t1", 1000, agent_id="a")
    assert (listed.id, listed.default_ttl_s) == (ns.id, 60)


async def test_a_search_whose_namespace_is_deleted_while_it_catches_up_answers_as_it_read(stores, monkeypatch):
    """A delete on the same replica drops the namespace's index without its lock (a forget-user, a namespace
    delete): one that came while a search caught its index up left the search a key no longer held (a
    KeyError: a 500). The search answers from what it read, and the index is not kept."""
    mine, other = stores
    await _write(mine, FACTS[:2])
    assert await mine.search("t1", "support", "u1", "beagle")  # the index is held, at its current change
    await _write(other, FACTS[2:])  # another replica's writes: the next search catches up
    catch_up = mine._catch_up

    async def then_deleted(*args, **kwargs):
        await catch_up(*args, **kwargs)
        assert await mine.delete_namespace("t1", "support", "u1") == len(FACTS)

    monkeypatch.setattr(mine, "_catch_up", then_deleted)
    hits = await mine.search("t1", "support", "u1", "lemon tart")
    assert hits and hits[0].record.text == FACTS[4]
    monkeypatch.undo()
    assert await mine.search("t1", "support", "u1", "lemon tart") == []


async def test_forget_user_deletes_every_namespace_of_the_user(stores, engine):
    a, b = stores
    await _write(a, FACTS, agent="support", user="u1")
    await _write(a, FACTS[:2], agent="travel", user="u1")
    [other] = await _write(a, FACTS[:1], agent="support", user="u2")
    [agent_own] = await _write(a, FACTS[:1], agent="support", user="")
    assert await b.search("t1", "travel", "u1", "peanuts")  # b holds an index of u1's namespace
    assert await a.forget_user("t2", "u1") == (0, 0)
    assert await a.forget_user("t1", "u1") == (2, 7)
    assert await b.search("t1", "travel", "u1", "peanuts") == []
    assert await a.page("t1", "support", "u1") is None
    async with engine.connect() as conn:
        left = (await conn.execute(sa.select(memory_records.c.id))).scalars().all()
        users = (await conn.execute(sa.select(memory_namespaces.c.user_id))).scalars().all()
        tombs = (await conn.execute(sa.select(sa.func.count()).select_from(memory_tombstones))).scalar()
    assert sorted(left) == sorted([other.id, agent_own.id]) and "u1" not in users and tombs == 0
    assert await a.delete_namespace("t1", "support", "u2") == 1
    assert await a.delete_namespace("t1", "support", "u2") is None


async def test_many_writes_and_deletes_rebuild_the_index_and_stay_exact(memory):
    texts = [f"filler record number {i} about topic {i % 37}" for i in range(1500)]
    written = await _write(memory, texts)
    assert len(await memory.search("t1", "support", "u1", "topic", top_k=5)) == 5
    for rec in written[:900]:
        await memory.delete("t1", rec.id)
    [needle] = await _write(memory, ["The wifi password is hidden under the blue lamp."])
    hits = await memory.search("t1", "support", "u1", "where is the wifi password?", top_k=5)
    assert hits[0].record.id == needle.id
    gone = {r.id for r in written[:900]}
    assert not gone & {h.record.id for h in await memory.search("t1", "support", "u1", "filler topic", top_k=100)}


async def test_no_row_holds_plaintext(memory, engine, db_url):
    await memory.write("t1", "a", "u", [NewRecord(f"{MARKER} the text", {"k": f"{MARKER}-meta"})])
    assert await memory.search("t1", "a", "u", "text")
    assert MARKER.encode() not in await stored_bytes(engine, db_url)


async def test_usage_counts_records_and_bytes_per_namespace_without_opening_them(memory):
    await _write(memory, [f"{MARKER} one", "two"])
    await memory.write("t1", "support", "u2", [NewRecord("gone soon", {}, ttl_s=1)])
    await memory.set_namespace("t1", "planner", "", 60)  # empty: a row with zero records
    await _write(memory, ["another tenant's"], tenant="t2")
    await asyncio.sleep(1.2)  # the TTL record is no longer live
    rows = await memory.usage("t1", 1000)
    assert [(r["agent_id"], r["user_id"], r["records"]) for r in rows] == [
        ("planner", "", 0),
        ("support", "u1", 2),
        ("support", "u2", 0),
    ]
    one = rows[1]
    assert one["bytes"] > len(f"{MARKER} one two") and rows[0]["bytes"] == rows[2]["bytes"] == 0
    assert one["oldest_at"] <= one["newest_at"] and one["oldest_at"].tzinfo is not None
    assert rows[0]["oldest_at"] is None and rows[0]["default_ttl_s"] == 60
    assert MARKER not in repr(rows)
    assert [r["records"] for r in await memory.usage("t3", 1000)] == []


async def test_searches_of_namespaces_that_do_not_exist_leave_no_lock_each(memory):
    """Each search takes its namespace's lock; a caller naming a new namespace per search made one lock
    each, kept until the next minute's sweep: now the idle ones go once MAX_IDLE_LOCKS are held."""
    from multihome.state.memory.store import MAX_IDLE_LOCKS

    await _write(memory, FACTS[:1])
    for i in range(MAX_IDLE_LOCKS + 500):
        assert not await memory.search("t1", "support", f"nobody-{i}", "dog", mode="keyword")
    assert len(memory._locks) <= MAX_IDLE_LOCKS + 1
    assert [h.record.text for h in await memory.search("t1", "support", "u1", "dog")] == FACTS[:1]


async def test_a_search_enters_the_namespace_lock_of_now_not_one_dropped_while_it_embedded(memory, monkeypatch):
    """A search took its namespace's lock once and entered it again after embedding the query: if the
    minute's sweep dropped the index and the idle lock meanwhile, a rebuild under the new lock and the
    search under the old one ran at once. Now the lock is taken from the map each time it is entered."""
    await _write(memory, FACTS[:1])
    key = ("t1", "support", "u1")
    real = memory._vectors
    embedding, resume = asyncio.Event(), asyncio.Event()

    async def held_vectors(*args, **kwargs):
        if args[-1] == "query":
            embedding.set()
            await resume.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(memory, "_vectors", held_vectors)
    search = asyncio.create_task(memory.search(*key, "dog"))
    await asyncio.wait_for(embedding.wait(), 20)
    memory._cache.clear()  # the sweep: the index idle, then the locks nobody uses
    memory._drop_idle_locks()
    async with memory._lock(key):  # a rebuild holds the namespace's lock now
        resume.set()
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert not search.done(), "the search ran under a lock dropped while it embedded its query"
    assert [h.record.text for h in await asyncio.wait_for(search, 20)] == FACTS[:1]
    assert len(memory._locks) == 1


async def test_a_lock_a_task_waits_for_or_was_woken_to_take_is_not_dropped(memory):
    key = ("t1", "support", "nobody")
    entered = []

    async def take():
        async with memory._lock(key):
            entered.append(memory._lock(key))

    async with memory._lock(key):
        first = memory._lock(key)
        waiter = asyncio.create_task(take())
        await asyncio.sleep(0.01)
        memory._drop_idle_locks()  # held, and waited for
    memory._drop_idle_locks()  # released: the waiter was woken but has not run yet
    await asyncio.wait_for(waiter, 20)
    assert entered == [first]
    memory._drop_idle_locks()
    assert len(memory._locks) == 0


async def test_many_small_namespaces_held_stay_within_the_memory_budget(db_url, kms_config):
    """One record in each of many namespaces, each searched: the indexes held weigh what they allocate, so
    their vectors stay within `max_records_in_memory` (records of BUDGET_DIM dimensions); an index of one
    record weighed 1 and held 256 rows."""
    from multihome.state.memory.store import BUDGET_DIM

    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    memory = MemoryStore(engine, keyring, embedder, max_records_in_memory=1_000)
    try:
        for i in range(150):
            await _write(memory, FACTS[:1], user=f"u{i}")
            assert len(await memory.search("t1", "support", f"u{i}", "dog")) == 1
        held = sum(c.index._vec.nbytes + c.index._coarse.nbytes for c in memory._cache.values())
        assert held <= 1_000 * BUDGET_DIM * 4 * 1.25, f"{held} bytes of vectors held for a budget of 1,000 records"
        assert len(await memory.search("t1", "support", "u0", "dog")) == 1  # an evicted one is loaded again
    finally:
        await memory.close()
        await keyring.close()
        await engine.dispose()


async def test_namespaces_and_their_usage_come_a_page_at_a_time_by_agent_and_user(memory):
    """A tenant may hold 100,000 namespaces: both lists are read a page at a time, in (agent, user) order (agent
    "a" user "z" before agent "ab"), each once. A cursor is a place in that order: another tenant's is one (the
    rows after it, none of the other's); what is no cursor, nor a namespace's id, is Invalid."""
    from multihome.storage.errors import Invalid

    names = [("ab", "a"), ("a", "z"), ("b", ""), ("a", "b"), ("ab", ""), ("a", "")]
    for agent, user in names:
        await memory.set_namespace("t1", agent, user, 60)
    await memory.set_namespace("t2", "a", "a", 60)
    expected = sorted(names)
    for read, pick in (
        (memory.namespaces, lambda n: (n.agent_id, n.user_id)),
        (memory.usage, lambda r: (r["agent_id"], r["user_id"])),
    ):
        seen, after, pages = [], None, 0
        while True:
            page = await read("t1", 4, after)
            seen += [pick(n) for n in page]
            pages += 1
            if not page.more:
                break
            after = page.last
        assert (seen, pages) == (expected, 2)
        foreign = (await memory.namespaces("t2", 1)).last  # agent "a", user "a"
        assert [pick(n) for n in await read("t1", 10, foreign)] == expected[1:]
        for bad in ("\x00mns", "mns_nosuchnamespace", "nsc_!!", "nsc_WyJhIl0", "nsc_" + "A" * 3000):
            with pytest.raises(Invalid, match="is not a cursor of this list"):
                await read("t1", 4, bad)


async def test_a_namespace_deleted_between_two_pages_leaves_its_cursor_a_place(memory):
    """Both lists go on after a namespace deleted since its page was read (its cursor is its agent and user)."""
    users = [f"u{i}" for i in range(5)]
    for user in users:
        await memory.set_namespace("t1", "bot", user, 60)
    for read, pick in ((memory.namespaces, lambda n: n.user_id), (memory.usage, lambda r: r["user_id"])):
        first = await read("t1", 2)
        await memory.delete_namespace("t1", "bot", pick(first[-1]))
        users.remove(pick(first[-1]))
        assert [pick(n) for n in await read("t1", 2, first.last)] == users[1:3]
