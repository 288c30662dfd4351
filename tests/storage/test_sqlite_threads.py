"""SQLite work on its own threads: concurrent writes share a transaction (group commit), a failing
unit fails alone, what `write` returned is committed (a fresh connection sees it), reads see writes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from multihome.storage.engine import create_engine
from multihome.storage.errors import Unavailable
from multihome.storage.sqlite_threads import SqliteThreads

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the SQLite engine's threads: no PostgreSQL run


@pytest.fixture
async def threads(migrated_url, tmp_path):
    engine = create_engine(migrated_url)
    t = SqliteThreads(engine)
    yield t, tmp_path / "multihome.db"
    t.close()
    await engine.dispose()


def _tenant(tenant_id: str):
    def work(conn: sa.Connection) -> str:
        conn.execute(sa.text("INSERT INTO probe (id) VALUES (:id)"), {"id": tenant_id})
        return tenant_id

    return work


@pytest.mark.anyio
async def test_concurrent_writes_commit_together_and_a_failing_one_fails_alone(threads):
    t, path = threads
    await t.write(lambda conn: conn.exec_driver_sql("CREATE TABLE probe (id TEXT PRIMARY KEY)"))
    await t.write(_tenant("dup"))
    commits = {"n": 0}
    sa.event.listen(t._engine, "commit", lambda conn: commits.__setitem__("n", commits["n"] + 1))
    assert await asyncio.gather(*(t.write(_tenant(f"t{i}")) for i in range(50))) == [f"t{i}" for i in range(50)]
    assert commits["n"] < 50  # many writes per commit
    # A unit that fails (a duplicate key) among others: it alone fails, the others are stored.
    results = await asyncio.gather(
        *(t.write(_tenant(f"u{i}")) for i in range(5)), t.write(_tenant("dup")), return_exceptions=True
    )
    assert results[:5] == [f"u{i}" for i in range(5)] and isinstance(results[5], IntegrityError)
    # Committed: another connection (outside the gateway) sees every row that write returned for.
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM probe").fetchone()[0] == 56
    assert await t.read(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM probe").scalar()) == 56


@pytest.mark.anyio
async def test_the_writer_commits_fsynced_unless_told_otherwise(threads, tmp_path):
    t, _ = threads
    assert await t.write(lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar()) == 2  # FULL
    with pytest.raises(ValueError):
        SqliteThreads(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"), synchronous="off")


@pytest.mark.anyio
async def test_a_closed_writer_refuses(threads):
    t, _ = threads
    t.close()
    with pytest.raises(Unavailable):  # the API's 503 storage_unavailable
        await t.write(lambda conn: None)


def _raw_row(row_id: str):
    def work(raw: sqlite3.Connection) -> str:
        raw.execute("INSERT INTO probe (id) VALUES (?)", (row_id,))
        return row_id

    return work


@pytest.mark.anyio
async def test_raw_units_commit_on_the_sqlite3_connection_alone_or_beside_others(threads):
    """`write_raw`: units of plain SQL on the sqlite3 connection, in one transaction begun and committed
    there (or, beside SQLAlchemy units, in theirs); a failing one fails alone, and what returned is
    committed."""
    t, path = threads
    await t.write(lambda conn: conn.exec_driver_sql("CREATE TABLE probe (id TEXT PRIMARY KEY)"))
    assert await t.write_raw(lambda raw: raw.in_transaction) is True  # inside the writer's transaction
    assert await t.write_raw(lambda raw: raw.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL: fsynced
    raws = [t.write_raw(_raw_row(f"r{i}")) for i in range(20)]
    mixed = [t.write(_tenant(f"m{i}")) for i in range(5)]
    assert await asyncio.gather(*raws, *mixed) == [*(f"r{i}" for i in range(20)), *(f"m{i}" for i in range(5))]
    results = await asyncio.gather(
        *(t.write_raw(_raw_row(f"u{i}")) for i in range(5)), t.write_raw(_raw_row("r0")), return_exceptions=True
    )
    assert results[:5] == [f"u{i}" for i in range(5)] and isinstance(results[5], sqlite3.IntegrityError)
    assert await t.write_raw(lambda raw: raw.in_transaction) is True  # the failure left no transaction open
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM probe").fetchone()[0] == 30


@pytest.fixture
async def normal(migrated_url, tmp_path):
    engine = create_engine(migrated_url)
    t = SqliteThreads(engine, synchronous="normal")
    await t.write(lambda conn: conn.exec_driver_sql("CREATE TABLE probe (id TEXT PRIMARY KEY, pad BLOB)"))
    yield t, tmp_path / "multihome.db"
    t.close()
    await engine.dispose()


def _where(row_id: str, threads: list[int]):
    def work(raw: sqlite3.Connection) -> str:
        threads.append(threading.get_ident())
        raw.execute("INSERT INTO probe (id) VALUES (?)", (row_id,))
        return row_id

    return work


@pytest.mark.anyio
async def test_with_normal_an_idle_writer_lets_the_loop_commit_and_a_lock_never_blocks_the_loop(normal):
    """`synchronous="normal"`, nothing else being written: the unit commits on the caller's thread (no hop),
    and is committed when `write_raw` returns. Another connection holding the write lock: the loop does
    not wait for it, the writer thread does, and commits the unit once the lock is free."""
    t, path = normal
    ran: list[int] = []
    assert await t.write_raw(_where("here", ran), 100) == "here"
    assert ran == [threading.get_ident()]
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT id FROM probe").fetchall() == [("here",)]
    lock = sqlite3.connect(path, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        pending = asyncio.create_task(t.write_raw(_where("later", ran), 100))
        await asyncio.sleep(0.2)  # the loop runs: the unit waits for the lock on the writer thread, not here
        assert not pending.done() and len(ran) == 1
        lock.execute("COMMIT")
        assert await asyncio.wait_for(pending, 30) == "later"
        assert ran[1] != threading.get_ident()
    finally:
        lock.close()
    with sqlite3.connect(path) as other:
        assert sorted(other.execute("SELECT id FROM probe").fetchall()) == [("here",), ("later",)]


@pytest.mark.anyio
async def test_with_full_every_commit_is_the_writers(threads):
    """An fsync never runs on the loop: with the default `full`, a unit never commits on the caller's thread."""
    t, _ = threads
    await t.write(lambda conn: conn.exec_driver_sql("CREATE TABLE probe (id TEXT PRIMARY KEY)"))
    ran: list[int] = []
    for i in range(3):
        await t.write_raw(_where(f"w{i}", ran), 100)
    assert len(ran) == 3 and threading.get_ident() not in ran


@pytest.mark.anyio
async def test_the_loops_commits_are_checkpointed_by_the_writer(normal, monkeypatch):
    """The loop's connection never checkpoints (that syncs the database file); the writer does, asked every
    few commits, so the WAL is reset instead of growing with every commit made on the loop."""
    t, path = normal
    monkeypatch.setattr("multihome.storage.sqlite_threads._CHECKPOINT_EVERY", 20)
    for i in range(400):
        await t.write_raw(lambda raw, i=i: raw.execute("INSERT INTO probe VALUES (?, ?)", (f"c{i}", b"x" * 3000)), 3000)
        if i % 20 == 19:
            await t.write(
                lambda conn: None
            )  # the writer's turn: it checkpoints before this unit, however busy the machine
    deadline = time.monotonic() + 30
    with sqlite3.connect(path) as other:
        while True:  # the WAL's length in frames, once no checkpoint is under way (else it is not reported)
            busy, frames, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert busy == 0 and 0 <= frames < 400  # without the writer's checkpoints: at least a frame per commit


@pytest.mark.anyio
async def test_a_large_unit_or_one_of_unknown_size_is_the_writers(normal):
    """A large row would hold the loop for its whole write (a stored turn can be ~20 MB): it goes to the
    writer thread even when the writer is idle, as does a unit whose caller does not say its size."""
    t, _ = normal
    ran: list[int] = []
    await t.write_raw(_where("big", ran), 1 << 20)
    await t.write_raw(_where("unsized", ran))
    assert len(ran) == 2 and threading.get_ident() not in ran
    await t.write_raw(_where("small", ran), 100)
    assert ran[2] == threading.get_ident()


@pytest.mark.anyio
async def test_the_loops_large_commits_are_checkpointed_by_bytes(normal, monkeypatch):
    """Few commits of many bytes: the checkpoint is asked by the bytes written too, so the WAL does not grow
    by the commit count's worth of large rows (a review measured 242 MB of WAL after 250 rows of 1 MB)."""
    t, path = normal
    monkeypatch.setattr("multihome.storage.sqlite_threads._CHECKPOINT_BYTES", 256 << 10)
    for i in range(60):
        await t.write_raw(
            lambda raw, i=i: raw.execute("INSERT INTO probe VALUES (?, ?)", (f"b{i}", b"x" * 60000)), 60000
        )
        await t.write(lambda conn: None)  # the writer's turn: a checkpoint asked is done before this unit
    deadline = time.monotonic() + 30
    with sqlite3.connect(path) as other:
        while True:
            busy, frames, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    # 60 rows of ~15 pages each: ~900 frames without a checkpoint between them (_CHECKPOINT_EVERY is 200)
    assert busy == 0 and 0 <= frames < 300
