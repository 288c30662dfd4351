"""Databases at the head revision for `multihome serve` processes whose tests are not about migrating:
a copy of the run's migrated SQLite file or PostgreSQL database (tests/conftest.py `sqlite_head`,
tests/pg.py `migrated_database`), for module-scoped fixtures (the `sqlite_database` and `pg_database`
factories are per test).

A gateway on a fresh database migrates it at start (alembic's import and every revision: ~0.4 s of CPU,
seconds under load), and replicas sharing a fresh database start one after the other (two would
migrate it at once); on a copy they start together (`processes.started_together`). A gateway still
migrates its new database at start in test_quickstart.py (as the page has it), test_no_secrets.py (its
DEBUG log) and test_audit.py; tests/storage/ and tests/test_serve_imports.py test migrating itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def head_database(request: pytest.FixtureRequest, backend: str, tmp: Path, name: str = "multihome.db") -> str:
    """The URL of a new database at the head revision: `backend` "sqlite" (the file `tmp`/`name`) or
    "postgresql" (a database of the run's `pg_server`, gone with it)."""
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_server").migrated_database())
    path = tmp / name
    shutil.copyfile(request.getfixturevalue("sqlite_head"), path)
    return f"sqlite+aiosqlite:///{path}"
