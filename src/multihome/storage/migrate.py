"""Versioned schema migrations (Alembic), shipped inside the package and run programmatically.

No alembic.ini is needed: the script location is this package's `migrations/` folder. Running
`upgrade` twice is a no-op; concurrent upgrades from several replicas serialize on a lock
(PostgreSQL advisory lock; SQLite BEGIN IMMEDIATE), and the whole upgrade is one transaction
on both backends (both have transactional DDL).
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import create_engine, is_sqlite, normalize_url, write_connection

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
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).render_as_string(hide_password=False))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(conn: Connection, target: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, target)


def current_revision_sync(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
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
        return await conn.run_sync(current_revision_sync)


def migrate_sync(url: str, target: str = "head") -> str | None:
    """Bring the database at `url` to `target` (for the CLI: `multihome db upgrade`).

    Returns the revision the database is at afterwards. Must not be called from a running loop.
    """

    async def run() -> str | None:
        engine = create_engine(url)
        try:
            await upgrade(engine, target)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())
