"""Memory's CPU work (a long text's embedding, a large namespace's search, an index's load) runs on threads
of memory's own, a share of them per tenant. It ran on the loop's default executor, where the usage spool's
fsync, the KMS and the call log of every tenant's calls run: one tenant's slow embeddings there held them
all back, and held every other tenant's memory writes too."""

from __future__ import annotations

import asyncio
import threading

import pytest

from multihome.config.memory import MemoryConfig
from multihome.crypto import open_keyring
from multihome.state.memory import MemoryStore, NewRecord
from multihome.storage.engine import create_engine

from .test_memory import embedder as real_embedder

pytestmark = pytest.mark.anyio
LONG = 20_001  # characters: a write this long is embedded on a thread


class _Stalling:
    """The offline model, but a text starting HANG holds its thread until `release` is set (a tenant's
    work that takes long: here, for as long as the test likes)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.stalled = threading.Semaphore(0)
        self._model = real_embedder()

    def embed(self, texts):
        if any(t.startswith("HANG") for t in texts):
            self.stalled.release()
            self.release.wait(120)
        return self._model.embed(texts)

    def __getattr__(self, name):
        return getattr(self._model, name)


@pytest.fixture
async def memory(db_url, kms_config):
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    model = _Stalling()
    store = MemoryStore(engine, keyring, lambda: model, limits=MemoryConfig(threads=4, threads_per_tenant=2))
    yield store, model
    model.release.set()
    await store.close()
    await keyring.close()
    await engine.dispose()


async def test_a_tenant_whose_memory_work_is_slow_holds_neither_the_default_executor_nor_other_tenants(memory):
    store, model = memory
    hostile = [
        asyncio.ensure_future(store.write("hostile", "agent", f"u{i}", [NewRecord("HANG" + "x" * LONG, {})]))
        for i in range(12)
    ]
    try:
        for _ in range(600):  # polled: at least one of them is on a thread, stalled
            if model.stalled.acquire(blocking=False):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no embedding reached a thread")
        loop = asyncio.get_running_loop()
        # The default executor still runs work (the usage spool's fsync, the KMS), within a generous deadline.
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "ran"), 30) == "ran"
        # Another tenant's long write is embedded on the threads the hostile tenant's share leaves free.
        [written] = await asyncio.wait_for(store.write("other", "agent", "u1", [NewRecord("y " * LONG, {})]), 60)
        assert written.text.startswith("y ")
        assert not any(h.done() for h in hostile)  # (the hostile tenant's writes are still waiting)
    finally:
        model.release.set()
        written = await asyncio.wait_for(asyncio.gather(*hostile), 120)
        assert len(written) == 12  # its work was held back, not refused
