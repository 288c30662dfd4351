"""storage.errors.unavailable: which errors mean "the database cannot be reached now" (the admin API's 503
`storage_unavailable`), checked against the errors a stopped PostgreSQL really raises."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from multihome.storage.errors import Invalid, unavailable


def test_bugs_and_bad_data_are_not_outages():
    assert not unavailable(ValueError("x"))
    assert not unavailable(Invalid("bad name"))
    assert not unavailable(KeyError("k"))
    try:  # an error raised while handling a connection error (not from it) is that error, not an outage
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError:
            raise RuntimeError("the KMS refused") from None
    except RuntimeError as exc:
        assert not unavailable(exc)


def test_a_stopped_and_a_stopping_postgres_are_outages(pg_server):
    url = pg_server.create_database()

    async def attempt() -> BaseException:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                pg_server.pause()
                with pytest.raises(Exception) as ended:  # the connection the server ended
                    await conn.execute(sa.text("SELECT 1"))
                assert unavailable(ended.value), repr(ended.value)
            with pytest.raises(Exception) as refused:  # a new connection, refused
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
            return refused.value
        finally:
            await engine.dispose()
            pg_server.resume()

    assert unavailable(asyncio.run(attempt()))


def test_a_read_only_postgres_is_an_outage(pg_server):
    """A standby (or `default_transaction_read_only`) answers every write with SQLSTATE 25006: the driver's
    error and SQLAlchemy's wrapping of it are an outage (retry), not a bug; a read still answers."""
    url = pg_server.create_database()

    async def attempt() -> list[BaseException]:
        engine = create_async_engine(url)
        raw = None
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("CREATE TABLE t (x int)"))
                await conn.execute(sa.text("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
            raised = []
            async with engine.connect() as conn:
                await conn.execute(sa.text("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
                await conn.commit()
                assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 0
                with pytest.raises(Exception) as wrapped:
                    await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                raised.append(wrapped.value)
            raw = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
            await raw.execute("SET default_transaction_read_only = on")
            with pytest.raises(asyncpg.PostgresError) as driver:
                await raw.execute("INSERT INTO t VALUES (1)")
            raised.append(driver.value)
            return raised
        finally:
            if raw is not None:
                await raw.close()
            await engine.dispose()

    for exc in asyncio.run(attempt()):
        assert "read-only transaction" in str(exc) and unavailable(exc), repr(exc)


def test_a_read_only_sqlite_file_is_an_outage(tmp_path):
    """SQLite's "attempt to write a readonly database" (SQLITE_READONLY) for a file opened read-only."""
    path = tmp_path / "ro.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x int)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as refused:
            conn.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    assert "readonly" in str(refused.value) and unavailable(refused.value)
