"""Contract ledger tests run against a SQLite file and a real PostgreSQL cluster (tests/pg.py)."""

from __future__ import annotations

import pytest

import multihome.contracts.tables  # noqa: F401  (registers contract_/ledger_ tables on the shared metadata)


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request, sqlite_database, pg_database):
    return sqlite_database("contracts.db") if request.param == "sqlite" else pg_database()


@pytest.fixture
def sqlite_url(sqlite_database):
    return sqlite_database("contracts.db")


@pytest.fixture
def anyio_backend():
    return "asyncio"
