"""Versioned schema migrations (Alembic), shipped inside the package and run programmatically.

No alembic.ini is needed: the script location is this package's `migrations/` folder. Running
`upgrade` twice is a no-op; concurrent upgrades from several replicas serialize on a lock
(PostgreSQL advisory lock; SQLite BEGIN IMMEDIATE), and the whole upgrade is one transaction
on both backends (both have transactional DDL).

Alembic (with mako and pygments, ~0.6 s of imports on a busy machine) is imported only when a
database is not at `HEAD`: a gateway starting on a migrated database reads `alembic_version` with
plain SQL, compares it with `HEAD`, and is done (tests/storage/test_migrations.py checks that `HEAD`
is the head of the migration scripts).
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import create_engine, is_sqlite, normalize_url, write_connection

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "0029"  # the newest migration's revision: update it with every new migration (a test checks it)
MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATE_LOCK = 0x6D68_6D69_6772  # pg_advisory_xact_lock key for "one migrator at a time"


# Alembic keeps the running migration in module globals (`alembic.context`), so two upgrades
# interleaving on one event loop would trample each other: one at a time per loop.
_LOOP_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _loop_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _LOOP_LOCKS.get(loop)
    if lock is None:
        lock = _LOOP_LOCKS[loop] = asyncio.Lock()
    return lock


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).render_as_string(hide_password=False))
    return cfg


def head_revision() -> str:
    """The revision this code needs the database at (without loading alembic)."""
    return HEAD


def script_head() -> str:
    """The head of the migration scripts, as alembic reads them (what `HEAD` must equal)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(conn: Connection, target: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, target)


# Whether alembic's version table exists, per backend (PostgreSQL: on the search path, where alembic puts it).
_HAS_VERSION_TABLE = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'",
    "postgresql": "SELECT count(*) FROM (SELECT to_regclass('alembic_version') AS t) AS v WHERE t IS NOT NULL",
}


async def _read_revision(conn: AsyncConnection) -> str | None:
    """The database's revision from `alembic_version`, as alembic would read it: None for an empty
    database. Several rows (branches, which this project does not use) come back joined: never `HEAD`."""
    if not (await conn.exec_driver_sql(_HAS_VERSION_TABLE[conn.dialect.name])).scalar():
        return None
    rows = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalars().all()
    return ",".join(sorted(rows)) or None


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    if not is_sqlite(engine):
        # Its DDL on big tables, and its wait for another replica's migration, may rightly outlast the
        # serving engine's statement timeout: an engine of its own without one.
        engine = create_engine(engine.url.render_as_string(hide_password=False), statement_timeout_s=None)
        try:
            await _upgrade_on(engine, target)
        finally:
            await engine.dispose()
        return
    await _upgrade_on(engine, target)


async def _upgrade_on(engine: AsyncEngine, target: str) -> None:
    async with _loop_lock():
        conn = await write_connection(engine)
        try:
            async with conn.begin():
                if not is_sqlite(engine):
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATE_LOCK)))
                await conn.run_sync(_upgrade, target)
        finally:
            await conn.close()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await _read_revision(conn)


async def upgrade_if_behind(engine: AsyncEngine) -> str:
    """Bring the database to `HEAD`, loading alembic only if it is not there already. Returns `HEAD`.

    The check is outside the migration lock: a database at `HEAD` stays there, and one that is not
    goes through `upgrade`, whose lock and re-check make concurrent starts safe as before."""
    if await current_revision(engine) != HEAD:
        await upgrade(engine)
    return HEAD


def migrate_sync(url: str, target: str = "head") -> str | None:
    """Bring the database at `url` to `target` (for the CLI: `multihome db upgrade`).

    Returns the revision the database is at afterwards. Must not be called from a running loop.
    """

    async def run() -> str | None:
        engine = create_engine(url)
        try:
            if target == "head":
                await upgrade_if_behind(engine)
            else:
                await upgrade(engine, target)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())
