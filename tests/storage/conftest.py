"""Every storage test runs twice: against a SQLite file and against a real PostgreSQL cluster."""

from __future__ import annotations

import pytest

from multihome.storage import migrate_sync, open_store

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_migrated_template(pg_server):
    """A database migrated once; each test gets a copy (CREATE DATABASE ... TEMPLATE)."""
    migrate_sync(pg_server.create_database("migrated_template"))
    return "migrated_template"


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def db_url(backend, tmp_path, request):
    """A fresh, empty database (not migrated)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'multihome.db'}"
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def migrated_url(backend, tmp_path, request):
    """A fresh database at the head revision."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'multihome.db'}"
        migrate_sync(url)
        return url
    template = request.getfixturevalue("pg_migrated_template")
    return request.getfixturevalue("pg_server").create_database(template=template)


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
