"""A SQLite file's change counter, read on a thread of its own (storage/version_reader.py)."""

from __future__ import annotations

import sqlite3

import pytest

from multihome.storage import open_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_the_counter_follows_commits_of_other_connections_and_holds_no_snapshot(sqlite_database):
    url = sqlite_database()
    poller, admin = await open_store(url), await open_store(url)  # two replicas on one file
    try:
        assert poller._version_reader is not None  # a SQLite file: the one-hop reader is used
        before = await poller.version()
        await admin.create_tenant("t", actor="admin")
        assert await poller.version() == before + 1  # the reader's connection saw the other's commit
        # Between polls the reader keeps no read transaction open: a checkpoint can empty the WAL
        # (a reader stuck on an old snapshot would make the WAL grow for ever).
        path = url.split("///", 1)[1]
        with sqlite3.connect(path) as other:
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        await admin.create_tenant("u", actor="admin")
        assert await poller.version() == before + 2
    finally:
        await poller.close()
        await admin.close()


async def test_an_in_memory_database_is_read_through_the_engine():
    store = await open_store("sqlite+aiosqlite:///:memory:", migrate=True)
    try:
        assert store._version_reader is None  # another connection would see another database
        before = await store.version()
        await store.create_tenant("t", actor="admin")
        assert await store.version() == before + 1
    finally:
        await store.close()
