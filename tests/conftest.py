"""Services shared by every test folder: one throwaway PostgreSQL cluster per test run."""

from __future__ import annotations

import pytest

from pg import PostgresServer  # tests/ is on sys.path (rootdir conftest)


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL cluster on loopback; each test makes its own database in it."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database at the head revision, SQLite then PostgreSQL (a folder's conftest may define its own)."""
    from multihome.storage import migrate_sync

    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'multihome.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    migrate_sync(url)
    return url
