"""Short reads of a SQLite file on a thread of their own (storage/sqlite_readers.py): the change counter."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from multihome.storage import open_store
from multihome.storage.sqlite_readers import ReadersClosed, SqliteReaders

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_the_counter_follows_commits_of_other_connections_and_holds_no_snapshot(sqlite_database):
    url = sqlite_database()
    poller, admin = await open_store(url), await open_store(url)  # two replicas on one file
    try:
        assert poller._readers is not None  # a SQLite file: the one-hop reader is used
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
        assert store._readers is None  # another connection would see another database
        before = await store.version()
        await store.create_tenant("t", actor="admin")
        assert await store.version() == before + 1
    finally:
        await store.close()


def _reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mh-sqlite-read")]


async def test_a_closed_store_reads_through_its_engine_and_makes_no_thread_again(sqlite_database):
    url = sqlite_database()
    store = await open_store(url)
    try:
        before = await store.version()
        assert store._readers is not None and not store._readers.closed
        await store.close()
        assert store._readers.closed
        threads = _reader_threads()
        # As a disposed engine, a closed store still answers, but not on a reader thread made again.
        assert await store.version() == before
        assert _reader_threads() == threads
    finally:
        await store.close()


async def test_close_waits_for_a_read_under_way_and_refuses_reads_after_it(sqlite_database):
    url = sqlite_database()
    store = await open_store(url)
    readers = SqliteReaders(store.engine)
    entered, release = threading.Event(), threading.Event()

    def slow(conn):
        entered.set()
        release.wait(30)
        return conn.connection.dbapi_connection.execute("SELECT version FROM state_version").fetchone()[0]

    try:
        under_way = asyncio.create_task(readers.read(slow))
        assert await asyncio.to_thread(entered.wait, 30)
        closing = asyncio.create_task(readers.close())
        for _ in range(100):  # the close marks the readers closed at once, then waits for the read
            if readers.closed:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(ReadersClosed):
            await readers.read(slow)
        assert not closing.done()
        release.set()
        assert await under_way == await store.version()  # the read under way finished on its connection
        await closing
        assert readers._opened == []  # and its connection was closed after it
    finally:
        release.set()
        await readers.close()
        await store.close()


async def test_a_failed_read_leaves_the_thread_a_fresh_connection(sqlite_database):
    url = sqlite_database()
    store = await open_store(url)
    readers = SqliteReaders(store.engine)

    def broken(conn):
        conn.connection.dbapi_connection.execute("SELECT nope FROM nowhere")

    def version(conn):
        return conn.connection.dbapi_connection.execute("SELECT version FROM state_version").fetchone()[0]

    try:
        with pytest.raises(sqlite3.OperationalError):
            await readers.read(broken)
        assert readers._opened == []
        assert await readers.read(version) == await store.version()
        assert len(readers._opened) == 1
    finally:
        await readers.close()
        await store.close()
