"""The SQLite writer thread (storage/sqlite_threads.py) never leaves a write waiting for ever: a database it
cannot open fails every write promptly (Unavailable, which the Responses and Conversations APIs answer with a
503 in OpenAI's format) and it writes again once the file can be opened; a failure of the thread's own code
fails its batch, not the thread; a unit that ends the thread fails what is queued and what comes after.

Each write is awaited under a generous deadline only so that a hang fails the test instead of stalling it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from multihome.api.responses.common import stored
from multihome.schema.errors import ApiError
from multihome.storage.engine import create_engine
from multihome.storage.errors import Unavailable, unavailable
from multihome.storage.sqlite_threads import SqliteThreads

pytestmark = pytest.mark.anyio
HANG = 60  # seconds: far past any write on a loaded machine; reached only if a write is never settled


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _insert(row_id: str):
    def work(conn: sa.Connection) -> str:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (id TEXT PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO probe (id) VALUES (?)", (row_id,))
        return row_id

    return work


def _raw_insert(row_id: str):
    def work(raw: sqlite3.Connection) -> str:
        raw.execute("INSERT INTO probe (id) VALUES (?)", (row_id,))
        return row_id

    return work


async def until(check) -> None:
    """Poll `check` (a generous deadline: a loaded machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG
    while not check():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


async def _outcome(write) -> object:
    try:
        return await asyncio.wait_for(write, HANG)
    except TimeoutError:
        return "hung"
    except (Exception, _Stop) as exc:
        return exc


@pytest.fixture
async def vanished(tmp_path):
    """A writer on a database file whose directory is gone (removed after the engine was made, which
    create_engine would refuse): its first connect fails."""
    folder = tmp_path / "gone"
    folder.mkdir()
    engine = create_engine(f"sqlite+aiosqlite:///{folder / 'state.db'}")
    folder.rmdir()
    threads = SqliteThreads(engine)
    yield threads, folder
    await asyncio.to_thread(threads.close)
    await engine.dispose()


async def test_a_database_the_writer_cannot_open_fails_each_write_promptly_and_it_recovers(vanished):
    threads, folder = vanished
    outcomes = await asyncio.gather(*(_outcome(threads.write(_insert(f"a{i}"))) for i in range(5)))
    assert all(isinstance(o, Unavailable) and unavailable(o) for o in outcomes), outcomes
    later = await _outcome(threads.write_raw(_raw_insert("b")))  # queued after the failure: fails too
    assert isinstance(later, Unavailable), later
    # The API's answer: a 503 in OpenAI's error envelope, not a 500 or a hang.
    refused = await _outcome(stored(threads.write(_insert("c"))))
    assert isinstance(refused, ApiError) and refused.status == 503, refused
    assert refused.body.code == "storage_unavailable" and refused.body.type == "server_error"
    # The cause goes away: the next write connects again and commits.
    folder.mkdir()
    assert await _outcome(threads.write(_insert("d"))) == "d"
    assert await _outcome(threads.write_raw(_raw_insert("e"))) == "e"
    with sqlite3.connect(folder / "state.db") as other:
        assert other.execute("SELECT id FROM probe ORDER BY id").fetchall() == [("d",), ("e",)]


@pytest.fixture
async def writer(sqlite_database, tmp_path):
    engine = create_engine(sqlite_database())
    threads = SqliteThreads(engine)
    await threads.write(lambda conn: conn.exec_driver_sql("CREATE TABLE probe (id TEXT PRIMARY KEY)"))
    yield threads, tmp_path / "multihome.db"
    await asyncio.to_thread(threads.close)
    await engine.dispose()


async def test_a_failure_of_the_writers_own_code_fails_its_batch_not_the_thread(writer, monkeypatch):
    """An exception outside any unit (here the commit step itself raises once): the batch's callers get
    it, and the thread goes on writing."""
    threads, _ = writer
    commit = threads._commit
    calls = {"n": 0}

    def fails_once(conn, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the writer")
        commit(conn, batch)

    monkeypatch.setattr(threads, "_commit", fails_once)
    first = await _outcome(threads.write(_insert("x")))
    assert isinstance(first, RuntimeError) and "bug" in str(first), first
    assert await _outcome(threads.write(_insert("y"))) == "y"
    assert await _outcome(threads.write_raw(_raw_insert("z"))) == "z"


class _Stop(BaseException):
    """Not an Exception: what a unit's work must never raise, and which ends the writer thread."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end, expected
async def test_a_unit_that_ends_the_thread_fails_what_is_queued_and_what_comes_after(writer):
    threads, _ = writer
    hold = threading.Event()

    def stops(conn: sa.Connection) -> None:
        hold.wait(HANG)  # the others queue behind it meanwhile
        raise _Stop()

    stopping = asyncio.ensure_future(_outcome(threads.write(stops)))
    await until(lambda: threads._writing)  # the thread is in it: what comes next is queued, not in its batch
    queued = [asyncio.ensure_future(_outcome(threads.write(_insert(f"q{i}")))) for i in range(3)]
    await until(lambda: len(threads._queue) == 3)  # queued behind the unit the thread is in
    hold.set()
    assert isinstance(await stopping, _Stop)
    for outcome in await asyncio.gather(*queued):
        assert isinstance(outcome, Unavailable), outcome
    after = await _outcome(threads.write(_insert("late")))
    assert isinstance(after, Unavailable), after


async def test_writes_racing_close_each_commit_or_are_refused(writer):
    """A close while writes are queued: each write commits (those queued before it) or is refused with
    Unavailable (those after); none is left waiting."""
    threads, path = writer
    closing = asyncio.ensure_future(asyncio.to_thread(threads.close))
    outcomes = await asyncio.gather(*(_outcome(threads.write(_insert(f"r{i}"))) for i in range(50)))
    await closing
    done = [o for o in outcomes if isinstance(o, str)]
    assert all(isinstance(o, Unavailable) for o in outcomes if not isinstance(o, str)), outcomes
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM probe").fetchone()[0] == len(done)


async def test_a_read_after_close_is_refused_as_unavailable(writer):
    """A read racing the store's close (the gateway shutting down) is the APIs' 503, not a 500."""
    threads, _ = writer
    await asyncio.to_thread(threads.close)
    refused = await _outcome(stored(threads.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())))
    assert isinstance(refused, ApiError) and refused.status == 503, refused
