"""Contract ledger tests run against a SQLite file and a real PostgreSQL cluster (tests/pg.py)."""

from __future__ import annotations

import pytest

import multihome.contracts.tables  # noqa: F401  (registers contract_/ledger_ tables on the shared metadata)
from multihome.storage import migrate_sync


@pytest.fixture(scope="session")
def contracts_pg_template(pg_server):
    migrate_sync(pg_server.create_database("contracts_template"))
    return "contracts_template"


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'contracts.db'}"
        migrate_sync(url)
        return url
    template = request.getfixturevalue("contracts_pg_template")
    return request.getfixturevalue("pg_server").create_database(template=template)


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'contracts.db'}"
    migrate_sync(url)
    return url


@pytest.fixture
def anyio_backend():
    return "asyncio"
