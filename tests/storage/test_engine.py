"""SQLite connection set-up: the switch to WAL holds when several connections open a new file at once."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
import sqlalchemy as sa

from multihome.storage.engine import create_engine

pytestmark = pytest.mark.anyio


async def _connect(path) -> str:
    engine = create_engine(str(path))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar()
    finally:
        await engine.dispose()


async def test_connections_racing_on_a_new_database_all_open_in_wal(tmp_path):
    # Two connections both switching to WAL can deadlock; SQLite then answers 'database is locked'
    # at once instead of waiting (it failed a gateway's start-up in CI). Forty rounds of six.
    for i in range(40):
        path = tmp_path / f"new{i}.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
        modes = await asyncio.gather(*(_connect(path) for _ in range(6)))
        assert modes == ["wal"] * 6


def test_a_sqlite_file_in_a_directory_that_does_not_exist_is_named(tmp_path, monkeypatch):
    """docs/storage.md: three slashes are a path relative to the working directory, four an absolute one. A
    URL whose directory does not exist fails at once naming the path, not with sqlite3's "unable to open
    database file" from the first connection."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as relative:
        create_engine("sqlite+aiosqlite:///var/lib/multihome/multihome.db")
    assert f"{tmp_path}/var/lib/multihome/multihome.db" in str(relative.value) and "four slashes" in str(relative.value)
    with pytest.raises(ValueError) as absolute:
        create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/multihome.db")
    assert f"{tmp_path}/missing does not exist" in str(absolute.value)
    (tmp_path / "var/lib/multihome").mkdir(parents=True)
    made = create_engine("sqlite+aiosqlite:///var/lib/multihome/multihome.db")  # relative, and there: fine
    asyncio.run(made.dispose())
