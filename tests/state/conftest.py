"""The stateful runtime's tests run against a SQLite file and a real PostgreSQL cluster."""

from __future__ import annotations

import pytest

from multihome.storage import migrate_sync
from multihome.storage.engine import create_engine


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'multihome.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    migrate_sync(url)
    return url


@pytest.fixture
async def engine(db_url):
    e = create_engine(db_url)
    yield e
    await e.dispose()
