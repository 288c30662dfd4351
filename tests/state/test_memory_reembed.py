"""Moving a memory namespace to another embedding model (state/memory/reembed.py), on SQLite and PostgreSQL:
batch by batch, searches keep the old vectors until the last batch switches the namespace at once; a write
made meanwhile is moved too; a batch that fails (as a killed process's) is done again and nothing else is;
another tenant's namespace is not found. The routed source is a stand-in for the gateway's pipeline
(tests/e2e/test_memory_reembed.py runs the real one, the CLI and a kill -9): it embeds with the offline
model, cut to each model's dimension, and logs what it was asked to embed in which space."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from multihome.schema.principal import Principal
from multihome.state.memory import MemoryStore, NewRecord
from multihome.state.memory.embedder import Caller, Space, SpaceUnavailable
from multihome.state.memory.reembed import Unchanged, step
from multihome.storage.engine import create_engine
from multihome.storage.errors import NotFound, UnreadableRow

from . import test_memory_spaces as spaces

open_store = spaces.open_store  # the fixture: a store on the test database (SQLite, then PostgreSQL)
embedder = spaces.embedder

pytestmark = pytest.mark.anyio
CALLER = Caller(Principal(tenant="t1", subject="k", source="api_key"), "req_test")
DIMS = {"old-model": 128, "new-model": 96}
THINGS = (
    "bicycle kayak piano violin telescope lantern backpack umbrella notebook camera guitar scooter tent "
    "hammock compass kettle blender toaster wardrobe bookshelf aquarium skateboard"
).split()
FACTS = [f"Fact {i}: the user's {thing} is kept in the garage." for i, thing in enumerate(THINGS)]


class Source:
    """A routed source whose deployments serve `models` (the first answers a new namespace, or a move)."""

    def __init__(self, *models: str) -> None:
        self.models = list(models)
        self.asked: list[tuple[str, list[str]]] = []  # (model, texts) of every embedding made
        self.fail_after: int | None = None  # this many more embeddings, then a failure (a killed batch)

    async def embed(self, texts, space, caller, *, purpose):
        model = space.model if space is not None else self.models[0]
        if model not in self.models:
            raise SpaceUnavailable(space, "no deployment of it now")
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise ConnectionError("the process running the batch died")
            self.fail_after -= 1
        self.asked.append((model, list(texts)))
        dim = DIMS[model]
        vectors = embedder().embed(texts)[:, :dim]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors), Space(model, dim)


async def _space(store: MemoryStore, tenant: str = "t1") -> tuple[str | None, int | None]:
    (ns,) = await store.namespaces(tenant, 1000, agent_id="a")
    return ns.embedding_model, ns.embedding_dim


def _embedded(source: Source, model: str) -> list[str]:
    return [t for m, texts in source.asked if m == model for t in texts]


async def test_a_namespace_moves_batch_by_batch_and_switches_at_once(open_store):
    source = Source("old-model")
    store = open_store(source)
    await store.write("t1", "a", "u", [NewRecord(t, {"n": i}) for i, t in enumerate(FACTS)], caller=CALLER)
    other = open_store(source)  # another replica: its index is of the old model until the switch
    assert (await other.search("t1", "a", "u", "the telescope", caller=CALLER))[0].record.text.startswith("Fact 4:")
    source.models = ["new-model", "old-model"]  # the group's model changed; the old one still answers

    first = await step(store, "t1", "a", "u", caller=CALLER, batch=8)
    assert (first.status, first.to_model, first.to_dim, first.done, first.total) == ("running", "new-model", 96, 8, 22)
    assert (first.from_model, first.from_dim) == ("old-model", 128)
    assert await _space(store) == ("old-model", 128)  # searches and writes stay on the old model
    mark = len(source.asked)
    hits = await other.search("t1", "a", "u", "where is the telescope kept?", mode="vector", caller=CALLER)
    assert hits[0].record.text.startswith("Fact 4:") and hits[0].record.metadata == {"n": 4}
    assert [m for m, _ in source.asked[mark:]] == ["old-model"]  # the query, in the namespace's current model
    await store.write("t1", "a", "u", [NewRecord("Written during the move: the car is green.", {})], caller=CALLER)

    second = await step(store, "t1", "a", "u", caller=CALLER, batch=8)
    assert (second.status, second.done, second.total) == ("running", 16, 23)
    third = await step(store, "t1", "a", "u", caller=CALLER, batch=8)
    assert (third.status, third.done) == ("running", 23)  # the write made meanwhile is moved too
    done = await step(store, "t1", "a", "u", caller=CALLER, batch=8)
    assert (done.status, done.to_model, done.to_dim, done.done, done.total) == ("completed", "new-model", 96, 23, 23)
    assert await _space(store) == ("new-model", 96)
    moved = _embedded(source, "new-model")
    assert sorted(moved) == sorted([*FACTS, "Written during the move: the car is green."])  # each once

    source.models = ["new-model"]  # the old model gone: the namespace no longer needs it
    source.asked.clear()
    for replica in (store, other):  # the other replica's index was of the old model: rebuilt on the switch
        hits = await replica.search("t1", "a", "u", "where is the telescope kept?", mode="vector", caller=CALLER)
        assert hits[0].record.text.startswith("Fact 4:") and hits[0].record.metadata == {"n": 4}
        assert 0.3 < hits[0].similarity <= 1.0001
    assert {m for m, _ in source.asked} == {"new-model"}
    hits = await other.search("t1", "a", "u", "what colour is the car?", mode="vector", caller=CALLER)
    assert hits[0].record.text.startswith("Written during the move")
    await store.write("t1", "a", "u", [NewRecord("After the move.", {})], caller=CALLER)  # in the new model
    with pytest.raises(Unchanged):  # nothing left to move
        await step(store, "t1", "a", "u", caller=CALLER)


async def test_a_stuck_namespace_is_refused_until_moved(open_store):
    source = Source("old-model")
    store = open_store(source)
    await store.write("t1", "a", "u", [NewRecord(t, {}) for t in FACTS[:5]], caller=CALLER)
    source.models = ["new-model"]
    with pytest.raises(SpaceUnavailable):
        await store.search("t1", "a", "u", "violin", caller=CALLER)
    while (await step(store, "t1", "a", "u", caller=CALLER, batch=2)).status != "completed":
        pass
    hits = await store.search("t1", "a", "u", "where is the violin?", caller=CALLER)
    assert hits[0].record.text.startswith("Fact 3:")


async def test_an_interrupted_batch_is_done_again_and_nothing_else(open_store, db_url):
    source = Source("old-model")
    store = open_store(source)
    await store.write("t1", "a", "u", [NewRecord(t, {}) for t in FACTS], caller=CALLER)
    source.models = ["new-model"]
    await step(store, "t1", "a", "u", caller=CALLER, batch=5)
    source.fail_after = 1
    await step(store, "t1", "a", "u", caller=CALLER, batch=5)
    with pytest.raises(ConnectionError):  # the third batch dies before it is stored
        await step(store, "t1", "a", "u", caller=CALLER, batch=5)
    source.fail_after = None
    restarted = open_store(source)  # another process takes over: the progress is in the database
    while (await step(restarted, "t1", "a", "u", caller=CALLER, batch=5)).status != "completed":
        pass
    moved = _embedded(source, "new-model")
    assert sorted(set(moved)) == sorted(FACTS) and len(moved) == len(FACTS)  # the lost batch was never stored
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            staged = await conn.execute(sa.text("SELECT count(*) FROM memory_records WHERE next_body IS NOT NULL"))
            assert staged.scalar() == 0  # every staged body is in place
    finally:
        await engine.dispose()


async def test_another_tenants_namespace_is_not_found_and_an_unchanged_model_is_refused(open_store):
    source = Source("old-model")
    store = open_store(source)
    await store.write("t1", "a", "u", [NewRecord("Parking code 5512.", {})], caller=CALLER)
    with pytest.raises(NotFound):
        await step(store, "t2", "a", "u", caller=CALLER)
    with pytest.raises(NotFound):
        await step(store, "t1", "a", "nobody", caller=CALLER)
    with pytest.raises(Unchanged):  # the configured model is the namespace's already
        await step(store, "t1", "a", "u", caller=CALLER)
    assert await _space(store) == ("old-model", 128)
    offline = open_store()
    await offline.write("t1", "b", "", [NewRecord("Offline.", {})])
    with pytest.raises(Unchanged):
        await step(offline, "t1", "b", "", caller=None)


async def test_a_record_stored_as_text_is_named_with_its_mend_and_the_move_goes_on_once_mended(open_store, db_url):
    """SQLite keeps text in the sealed body's column (a hand edit): a batch holding it was a TypeError (a 500 of
    the admin route, `multihome memory reembed` failing); it is a 409 naming the record and its mend."""
    source = Source("old-model")
    store = open_store(source)
    await store.write("t1", "a", "u", [NewRecord(t, {}) for t in FACTS[:4]], caller=CALLER)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            (bad,) = (await conn.execute(sa.text("SELECT id FROM memory_records ORDER BY seq LIMIT 1 OFFSET 1"))).one()
            if engine.dialect.name == "sqlite":
                await conn.execute(sa.text("UPDATE memory_records SET body = 'not sealed' WHERE id = :id"), {"id": bad})
            else:  # PostgreSQL's bytea holds bytes only: a body that is no sealed record
                await conn.execute(
                    sa.text("UPDATE memory_records SET body = 'not sealed'::bytea WHERE id = :id"), {"id": bad}
                )
    finally:
        await engine.dispose()
    source.models = ["new-model"]
    with pytest.raises(UnreadableRow) as refused:
        await step(store, "t1", "a", "u", caller=CALLER, batch=10)
    assert refused.value.id == bad and "DELETE /v1/memory/records/" in str(refused.value)
    assert await _space(store) == ("old-model", 128)  # nothing moved
    assert await store.delete("t1", bad)  # the mend
    while (await step(store, "t1", "a", "u", caller=CALLER, batch=10)).status != "completed":
        pass
    assert await _space(store) == ("new-model", 96)
