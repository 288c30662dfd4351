"""The periodic polls on PostgreSQL (the snapshot's change counter, the job worker's peek, the stored
provider keys' versions): each is one statement on a held connection, with no pre-ping and no BEGIN/ROLLBACK around it (storage/pg_reads.py),
and a poll after a server restart runs on a new connection."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from sqlalchemy import event

from multihome.config.kms import KmsConfig
from multihome.crypto import init_key_file, open_keyring
from multihome.crypto.credentials import ProviderCredentials
from multihome.state.jobs import JobQueue
from multihome.storage import SnapshotCache, open_store
from multihome.storage.engine import create_engine
from multihome.storage.errors import unavailable
from multihome.storage.store import Store

pytestmark = pytest.mark.anyio
KINDS = ["response", "retention"]


@pytest.fixture
def url(pg_database) -> str:
    return pg_database()  # made outside the test's event loop (migrating runs one of its own)


@pytest.fixture
def kms_config(tmp_path) -> KmsConfig:
    init_key_file(tmp_path / "kms.key")
    return msgspec.convert({"backend": "local", "local": {"key_file": str(tmp_path / "kms.key")}}, KmsConfig)


async def test_each_poll_sends_one_statement_and_no_transaction(url, kms_config):
    engine = create_engine(url)
    sent: list[str] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _log(dbapi_connection, _record) -> None:  # every connection the engine opens, held ones too
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    store, queue = Store(engine), JobQueue(engine)
    keyring = open_keyring(kms_config, engine)
    credentials = ProviderCredentials(["p1"], ["p1"], lambda provider, key: None, interval_s=3600)
    await credentials.start(keyring, engine)  # its poll task sleeps for the hour: the test polls
    assert credentials.store is not None
    polls = {
        "version": store.version,
        "jobs peek": lambda: queue.claim("replica-1", KINDS, lease_s=30, reclaim="replica#"),
        "credential versions": credentials.sync,
    }
    try:
        for name, poll in polls.items():
            await poll()  # the first one opens its connection (and prepares the statement)
            await asyncio.sleep(0)  # asyncpg calls the loggers soon after the statement
            sent.clear()
            for _ in range(5):
                await poll()
            await asyncio.sleep(0)
            assert len(sent) == 5, (name, sent)
            assert all(q.lstrip().upper().startswith("SELECT") for q in sent), (name, sent)
    finally:
        await credentials.close()
        await keyring.close()
        await queue.close()
        await store.close()


async def test_the_polls_give_what_the_engine_reads(url):
    store = Store(create_engine(url))
    queue = JobQueue(store.engine)
    try:
        first = await store.version()
        await store.create_tenant("t", actor="admin")
        assert await store.version() == first + 1
        assert await queue.claim("replica-1", KINDS, lease_s=30) == []
        job_id = await queue.enqueue("response", "t1", "resp_1")
        assert [j.id for j in await queue.claim("replica-1", KINDS, lease_s=30)] == [job_id]
        assert await queue.claim("replica-1", KINDS, lease_s=30) == []  # running, its lease not run out
        # The next incarnation of the same replica takes its orphaned job at once (the peek's LIKE).
        assert [j.id for j in await queue.claim("rep#b", KINDS, lease_s=30, reclaim="rep#")] == []
        other = await queue.enqueue("retention", "t1", "sweep_1")
        held = await queue.claim("rep#a", KINDS, lease_s=30)
        assert [j.id for j in held] == [other]
        assert [j.id for j in await queue.claim("rep#b", KINDS, lease_s=30, reclaim="rep#")] == [other]
    finally:
        await queue.close()
        await store.close()


async def _until(check, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_polls_fail_while_the_server_is_down_and_resume_after(pg_server, url):
    store = await open_store(url)
    queue = JobQueue(store.engine)
    cache = SnapshotCache(store, interval_s=0.02)
    await cache.start()
    try:
        assert await queue.claim("replica-1", KINDS, lease_s=30) == []
        await asyncio.to_thread(pg_server.pause)  # ends the held connections
        try:

            async def failing() -> bool:
                return cache.poll_errors > 0

            await _until(failing, "the snapshot poll did not fail with the server down")
            with pytest.raises(Exception) as refused:  # whatever the driver raised
                await queue.claim("replica-1", KINDS, lease_s=30)
            assert unavailable(refused.value), refused.value  # an outage, as through the engine
        finally:
            await asyncio.to_thread(pg_server.resume)
        tenant = await store.create_tenant("after", actor="admin")

        async def served() -> bool:
            return tenant.id in cache.snapshot.tenants

        await _until(served, "the snapshot poll did not resume after the restart")
        job_id = await queue.enqueue("response", "t1", "resp_after")
        assert [j.id for j in await queue.claim("replica-1", KINDS, lease_s=30)] == [job_id]
    finally:
        await cache.stop()
        await queue.close()
        await store.close()


async def test_a_stored_key_changed_elsewhere_reaches_the_adapter_at_the_next_poll(url, kms_config):
    engine = create_engine(url)
    keyring = open_keyring(kms_config, engine)
    applied: dict[str, str | None] = {}
    credentials = ProviderCredentials(["p1"], ["p1"], applied.__setitem__, interval_s=0.02)
    try:
        await credentials.start(keyring, engine)
        assert applied == {}
        assert credentials.store is not None
        await credentials.store.put("p1", "sk-first-0123456789", actor="admin")

        async def seen() -> bool:
            return applied.get("p1") == "sk-first-0123456789"

        await _until(seen, "the poll did not apply the stored key")
        await credentials.store.delete("p1")

        async def removed() -> bool:
            return "p1" in applied and applied["p1"] is None

        await _until(removed, "the poll did not remove the deleted key")
    finally:
        await credentials.close()
        await keyring.close()
        await engine.dispose()
