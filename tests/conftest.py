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
