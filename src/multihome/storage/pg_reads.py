"""Frequent one-statement reads on PostgreSQL, on asyncpg connections held out of the engine's pool.

Through the async engine a read pays the pool's pre-ping (BEGIN, `;`, ROLLBACK), BEGIN, the statement and
ROLLBACK (six round trips, each through SQLAlchemy's greenlet bridge): ~0.8-1.1 ms of CPU for a one-row
primary-key read, where the statement alone on the asyncpg connection costs ~0.05 ms (bench/RESULTS.md,
memory search). A memory search reads its namespace's row every time (state/memory/store.py), and every
replica polls several times a second (the snapshot's change counter, the job worker's peek, the stored
provider keys' versions), so they pay that here instead:
a statement compiled once by SQLAlchemy for PostgreSQL, run alone (autocommit: one statement sees one
snapshot, which is all these reads need) on a connection kept checked out of the pool: one round trip.

A connection whose statement fails is dropped (invalidated, so the pool opens a new one), and a statement
that failed because the connection was gone (a restarted server) is run once more on a fresh connection:
the pool's pre-ping, which these reads skip, would have caught that. Writes never go through here.

A read cancelled (its call's client hung up) while it takes a new connection leaves nothing checked out:
SQLAlchemy gives back a connection whose checkout was cancelled, and one checked out before the cancel is
closed here (tests/storage/test_pg_reads.py cancels at every turn of the loop a new connection takes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .errors import unavailable


class Statement:
    """A SELECT compiled for PostgreSQL: its `$n` text and the names of its parameters, in order
    (`sa.bindparam(name)`; a literal in the statement keeps its value)."""

    def __init__(self, stmt: sa.Select[Any], engine: AsyncEngine) -> None:
        compiled = stmt.compile(dialect=engine.dialect)
        if "POSTCOMPILE" in compiled.string:  # an expanding IN would need rendering per call
            raise ValueError("a held read takes no expanding parameters (IN lists)")
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._defaults = dict(compiled.params)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[n] if n in params else self._defaults[n] for n in self._names]


@lru_cache(maxsize=1)
def _record_class() -> type:
    """asyncpg's row type with attribute access (`row.id`), as SQLAlchemy's rows have; asyncpg is
    imported here, not when a SQLite gateway starts."""
    import asyncpg  # type: ignore[import-untyped]

    class Row(asyncpg.Record):
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    return Row


class HeldReads:
    """At most `size` connections held (statements beyond that wait for one to be free)."""

    def __init__(self, engine: AsyncEngine, size: int = 2) -> None:
        self._engine = engine
        # Each with its asyncpg connection, found once: asking for it again is a greenlet hop per read.
        self._free: list[tuple[AsyncConnection, Any]] = []
        self._slots = asyncio.Semaphore(size)
        # Compiled once per statement (module constants); the statement is kept so its id stays its own.
        self._statements: dict[int, tuple[sa.Select[Any], Statement]] = {}
        self._closed = False

    def _compiled(self, stmt: sa.Select[Any]) -> Statement:
        found = self._statements.get(id(stmt))
        if found is None:
            found = self._statements[id(stmt)] = (stmt, Statement(stmt, self._engine))
        return found[1]

    async def fetch(self, stmt: sa.Select[Any], params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows of `stmt` with `params`, each with attribute access by column name."""
        compiled = self._compiled(stmt)
        args = compiled.args(params)
        async with self._slots:
            for attempt in (1, 2):
                conn, driver = await self._take()
                try:
                    rows = await driver.fetch(compiled.sql, *args, record_class=_record_class())
                except BaseException as exc:
                    await _drop(conn)
                    gone = isinstance(exc, Exception) and (unavailable(exc) or driver.is_closed())
                    if attempt == 1 and gone:
                        continue
                    raise
                if self._closed:
                    await conn.close()
                else:
                    self._free.append((conn, driver))
                return rows
        raise AssertionError("unreachable")

    async def _take(self) -> tuple[AsyncConnection, Any]:
        """A held connection (one the server closed meanwhile is dropped), or a new one from the pool."""
        while self._free:
            conn, driver = self._free.pop()
            if not driver.is_closed():
                return conn, driver
            await _drop(conn)
        conn = await self._engine.connect()
        try:
            driver = (await conn.get_raw_connection()).driver_connection
        except BaseException:  # cancelled (its call's client hung up): checked out and unheld, it would never return
            await conn.close()
            raise
        assert driver is not None  # a connection just checked out of the pool is valid
        return conn, driver

    async def close(self) -> None:
        """Give the held connections back to the pool."""
        self._closed = True
        free, self._free = self._free, []
        for conn, _ in free:
            await conn.close()


async def _drop(conn: AsyncConnection) -> None:
    """A connection a statement failed on (or was cancelled on): out of the pool for good."""
    try:
        await conn.invalidate()
    finally:
        await conn.close()
