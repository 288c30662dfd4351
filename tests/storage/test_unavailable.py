"""storage.errors.unavailable: which errors mean "the database cannot be reached now" (the admin API's 503
`storage_unavailable`), checked against the errors a stopped PostgreSQL really raises."""

from __future__ import annotations

import asyncio

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
