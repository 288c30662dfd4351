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
