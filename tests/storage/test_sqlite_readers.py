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


def _version(conn):
    return conn.connection.dbapi_connection.execute("SELECT version FROM state_version").fetchone()[0]


def _raw_of(conn):
    return conn.connection.dbapi_connection


async def test_a_read_that_fails_on_its_own_keeps_its_connection(sqlite_database):
    """A bad statement, a constraint violation, an interrupted statement, an error of the work itself, a
    transaction left open: the connection is as good as before, so the thread keeps it (its temp table,
    which only that connection sees, is still there) and the next read runs on it."""
    url = sqlite_database()
    store = await open_store(url)
    readers = SqliteReaders(store.engine)

    def setup(conn):
        raw = _raw_of(conn)
        raw.execute("CREATE TEMP TABLE seen (x INTEGER PRIMARY KEY)")
        raw.execute("INSERT INTO seen VALUES (1)")
        return raw

    def bad_statement(conn):
        _raw_of(conn).execute("SELECT nope FROM nowhere")

    def constraint(conn):
        _raw_of(conn).execute("INSERT INTO seen VALUES (1)")

    def interrupted(conn):  # as a progress handler (or `interrupt()`) aborts a statement: "interrupted"
        raw = _raw_of(conn)
        raw.set_progress_handler(lambda: 1, 1000)
        try:
            raw.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) SELECT count(*) FROM n"
            )
        finally:
            raw.set_progress_handler(None, 0)

    def own_error(conn):
        raise ValueError("the caller's own")

    def left_open(conn):
        conn.connection.dbapi_connection.execute("BEGIN")
        _raw_of(conn).execute("SELECT version FROM state_version").fetchone()
        raise KeyError("mid-transaction")

    def check(conn):
        raw = _raw_of(conn)
        return raw, raw.execute("SELECT count(*) FROM temp.seen").fetchone()[0], raw.in_transaction

    try:
        raw = await readers.read(setup)
        failing = [
            (bad_statement, sqlite3.OperationalError),
            (constraint, sqlite3.IntegrityError),
            (interrupted, sqlite3.OperationalError),
            (own_error, ValueError),
            (left_open, KeyError),
        ]
        for work, error in failing:
            with pytest.raises(error):
                await readers.read(work)
            assert await readers.read(check) == (raw, 1, False), work.__name__
        assert len(readers._opened) == 1
        assert await readers.read(_version) == await store.version()
    finally:
        await readers.close()
        await store.close()


async def test_a_read_on_a_broken_connection_leaves_the_thread_a_fresh_one(sqlite_database):
    url = sqlite_database()
    store = await open_store(url)
    readers = SqliteReaders(store.engine)

    def broken(conn):
        raw = _raw_of(conn)
        raw.close()  # closed underneath SQLAlchemy: every later statement on it fails
        raw.execute("SELECT 1")

    try:
        first = await readers.read(_raw_of)
        with pytest.raises(sqlite3.ProgrammingError):
            await readers.read(broken)
        assert readers._opened == []
        assert await readers.read(_version) == await store.version()
        assert len(readers._opened) == 1 and await readers.read(_raw_of) is not first
    finally:
        await readers.close()
        await store.close()
