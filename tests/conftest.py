"""Services shared by every test folder: one throwaway PostgreSQL cluster per test run, and databases
at the head revision handed out as copies of one migrated once (SQLite file copy, PostgreSQL TEMPLATE)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pg import PostgresServer  # tests/ is on sys.path (rootdir conftest)


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL cluster on loopback; each test makes its own database in it."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqlite_head(tmp_path_factory) -> Path:
    """A SQLite file migrated once; `sqlite_database` copies it (the engine is disposed: no WAL left)."""
    from multihome.storage import migrate_sync

    path = tmp_path_factory.mktemp("sqlite-head") / "head.db"
    migrate_sync(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_database(sqlite_head, tmp_path) -> Callable[..., str]:
    """`sqlite_database(name="multihome.db", migrated=True)`: the URL of a new SQLite file in the test's tmp."""

    def make(name: str = "multihome.db", *, migrated: bool = True) -> str:
        path = tmp_path / name
        if migrated:
            shutil.copyfile(sqlite_head, path)
        return f"sqlite+aiosqlite:///{path}"

    return make


@pytest.fixture
def pg_database(request) -> Iterator[Callable[..., str]]:
    """`pg_database(migrated=True)`: the URL of a new PostgreSQL database, dropped when the test ends
    (a run makes ~1,000: kept, they would fill the cluster's directory with ~300,000 files)."""
    made: list[str] = []
    server: list[PostgresServer] = []

    def make(*, migrated: bool = True) -> str:
        if not server:
            server.append(request.getfixturevalue("pg_server"))
        url = server[0].migrated_database() if migrated else server[0].create_database()
        made.append(url)
        return url

    yield make
    for url in made:
        server[0].drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, sqlite_database, pg_database):
    """A database at the head revision, SQLite then PostgreSQL (a folder's conftest may define its own)."""
    return sqlite_database() if request.param == "sqlite" else pg_database()
