"""One namespace, one embedding model (docs/memory.md "Embeddings"), on SQLite and PostgreSQL: the store
records a namespace's space at its first write, embeds its later writes and queries in it, keeps a
namespace written offline offline after a routed model is configured, and refuses (never compares) when
the namespace's model cannot be had. The routed source here is a stand-in for the gateway's pipeline
(tests/e2e/test_memory_routed.py runs the real one): it embeds with the offline model and names the
space it was asked for, so what the store asked for is what the test reads."""

from __future__ import annotations

import numpy as np
import pytest

from multihome.crypto import open_keyring
from multihome.schema.principal import Principal
from multihome.state.memory import MemoryStore, NewRecord, WordLlamaEmbedder
from multihome.state.memory.embedder import Caller, Space, SpaceUnavailable
from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio
_MODEL: list[WordLlamaEmbedder] = []
CALLER = Caller(Principal(tenant="t1", subject="k", source="api_key"), "req_test")


def embedder() -> WordLlamaEmbedder:
    if not _MODEL:
        _MODEL.append(WordLlamaEmbedder())
    return _MODEL[0]


class Source:
    """A routed source whose deployments serve `models` (the first answers a new namespace)."""

    def __init__(self, *models: str) -> None:
        self.models = list(models)
        self.asked: list[tuple[list[str], Space | None]] = []

    async def embed(self, texts, space, caller, *, purpose):
        assert caller is CALLER and purpose in ("records", "query")
        self.asked.append((texts, space))
        model = space.model if space is not None else self.models[0]
        if model not in self.models:
            raise SpaceUnavailable(space, "no deployment of it now")
        vectors = embedder().embed(texts)
        return np.ascontiguousarray(vectors[:, :128]), Space(model, 128)


@pytest.fixture
async def open_store(db_url, kms_config):
    made = []

    def make(routed=None) -> MemoryStore:
        engine = create_engine(db_url)
        keyring = open_keyring(kms_config, engine)
        store = MemoryStore(engine, keyring, embedder, routed=routed)
        made.append((store, keyring, engine))
        return store

    yield make
    for store, keyring, engine in made:
        await store.close()
        await keyring.close()
        await engine.dispose()


async def _space(store: MemoryStore, agent: str) -> tuple[str | None, int | None]:
    (ns,) = await store.namespaces("t1", 1000, agent_id=agent)
    return ns.embedding_model, ns.embedding_dim


async def test_a_namespace_keeps_the_model_of_its_first_write(open_store):
    source = Source("te3-small", "titan-v2")
    store = open_store(source)
    await store.write("t1", "a", "u", [NewRecord("The user's dog is a beagle named Biscuit.", {})], caller=CALLER)
    assert await _space(store, "a") == ("te3-small", 128)
    source.models.reverse()  # the group now prefers another model: this namespace stays on its own
    await store.write("t1", "a", "u", [NewRecord("The user likes lemon tart.", {})], caller=CALLER)
    hits = await store.search("t1", "a", "u", "what is the dog called?", mode="vector", caller=CALLER)
    assert hits[0].record.text.startswith("The user's dog")
    assert [s.model if s else None for _, s in source.asked] == [None, "te3-small", "te3-small"]
    await store.write("t1", "b", "u", [NewRecord("A new namespace.", {})], caller=CALLER)
    assert await _space(store, "b") == ("titan-v2", 128)  # a new namespace takes the group's model now


async def test_a_namespace_whose_model_is_gone_is_refused_not_compared(open_store):
    source = Source("te3-small")
    store = open_store(source)
    await store.write("t1", "a", "u", [NewRecord("Parking code 5512.", {})], caller=CALLER)
    source.models = ["titan-v2"]  # no deployment of the namespace's model any more
    with pytest.raises(SpaceUnavailable, match="te3-small"):
        await store.search("t1", "a", "u", "parking", caller=CALLER)
    with pytest.raises(SpaceUnavailable):
        await store.write("t1", "a", "u", [NewRecord("Another fact.", {})], caller=CALLER)
    assert (await store.namespaces("t1", 1000))[0].records == 1  # nothing written
    hits = await store.search("t1", "a", "u", "parking code", mode="keyword", caller=CALLER)
    assert [h.record.text for h in hits] == ["Parking code 5512."]  # keyword search needs no embedding
    # A gateway switched back to the offline model refuses the routed namespace the same way.
    offline = open_store()
    with pytest.raises(SpaceUnavailable, match="offline model"):
        await offline.search("t1", "a", "u", "parking", caller=CALLER)


async def test_a_namespace_written_offline_stays_offline_when_a_routed_model_is_configured(open_store):
    offline = open_store()
    await offline.write("t1", "a", "u", [NewRecord("The user's sister lives in Lisbon.", {})])
    model = embedder()
    assert await _space(offline, "a") == (model.name, model.dim)
    source = Source("te3-small")
    routed = open_store(source)
    await routed.write("t1", "a", "u", [NewRecord("The user flies on Fridays.", {})], caller=CALLER)
    hits = await routed.search("t1", "a", "u", "where does the sister live?", mode="vector", caller=CALLER)
    assert hits[0].record.text == "The user's sister lives in Lisbon."
    assert source.asked == []  # the routed source was never asked: the namespace is the offline model's
    assert await _space(routed, "a") == (model.name, model.dim)
