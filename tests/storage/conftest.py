"""Every storage test runs twice: against a SQLite file and against a real PostgreSQL cluster."""

from __future__ import annotations

import pytest

from multihome.storage import open_store, write_lock

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def db_url(backend, sqlite_database, pg_database):
    """A fresh, empty database (not migrated)."""
    return sqlite_database(migrated=False) if backend == "sqlite" else pg_database(migrated=False)


@pytest.fixture
def migrated_url(backend, sqlite_database, pg_database):
    """A fresh database at the head revision."""
    return sqlite_database() if backend == "sqlite" else pg_database()


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def store(migrated_url):
    s = await open_store(migrated_url)
    await s.ensure_current()
    yield s
    await s.close()


@pytest.fixture
async def store2(store, migrated_url):
    """A second Store on the same database: another replica."""
    s = await open_store(migrated_url)
    yield s
    await s.close()


@pytest.fixture(autouse=True)
def own_write_lock_registry(monkeypatch):
    """An empty registry of SQLite write transactions (storage/write_lock.py) for each test: the worker's earlier
    tests may leave a connection closed mid-transaction in it (named while a cursor of it is left), which a test
    reading the registry would see too."""
    monkeypatch.setattr(write_lock, "_held", {})
