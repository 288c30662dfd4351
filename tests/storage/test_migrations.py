from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from multihome.storage import SchemaOutOfDate, head_revision, migrate_sync, open_store
from multihome.storage.migrate import HEAD, current_revision, script_head
from multihome.storage.tables import metadata

pytestmark = pytest.mark.anyio


def _diff(conn):
    return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


async def test_migrated_schema_equals_table_definitions(store):
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == [], f"migrations and storage/tables.py disagree; write a migration: {diff}"


async def test_migrate_is_idempotent_and_keeps_data(store):
    tenant = await store.create_tenant("acme", actor="admin")
    assert await store.migrate() == head_revision()
    assert await store.migrate() == head_revision()
    assert (await store.get_tenant(tenant.id)).name == "acme"
    assert await store.schema_revision() == head_revision()


async def test_unmigrated_database_is_reported_not_used(db_url):
    store = await open_store(db_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="multihome db upgrade"):
            await store.ensure_current()
        await store.migrate()
        await store.ensure_current()
        assert await store.version() == 0
    finally:
        await store.close()


async def test_concurrent_migrations_from_several_processes(db_url):
    """Four replicas starting at once each run `multihome db upgrade`: all succeed, schema once."""
    code = "import sys; from multihome.storage import migrate_sync; print(migrate_sync(sys.argv[1]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert {out.strip() for out, _ in outs} == {head_revision()}
    store = await open_store(db_url)
    try:
        await store.ensure_current()
        assert await store.version() == 0
        await store.create_tenant("one", actor="admin")
    finally:
        await store.close()


async def test_concurrent_migrations_in_one_process(db_url):
    stores = [await open_store(db_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        for s in stores:
            await s.ensure_current()
    finally:
        for s in stores:
            await s.close()


def test_head_is_the_newest_migration():
    """`HEAD` lets a gateway start without loading alembic: a new migration must update it."""
    assert HEAD == script_head(), f"set HEAD = {script_head()!r} in storage/migrate.py (the newest migration)"


async def test_revision_is_read_as_alembic_reads_it(db_url):
    """The plain-SQL read of `alembic_version` agrees with alembic's own, empty and migrated."""
    store = await open_store(db_url)
    try:
        for expected in (None, "0016", HEAD):
            if expected is not None:
                await asyncio.to_thread(migrate_sync, db_url, expected)
            async with store.engine.connect() as conn:
                theirs = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
            assert theirs == expected
            assert await current_revision(store.engine) == expected
    finally:
        await store.close()


async def test_a_database_behind_head_is_upgraded_on_open(db_url):
    await asyncio.to_thread(migrate_sync, db_url, "0016")
    store = await open_store(db_url, migrate=True)
    try:
        await store.ensure_current()
        assert await store.schema_revision() == HEAD
    finally:
        await store.close()


def test_migrate_sync_for_the_cli(db_url):
    assert migrate_sync(db_url) == head_revision()
    assert migrate_sync(db_url) == head_revision()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    path = tmp_path / "wal.db"
    store = await open_store(str(path), migrate=True)  # a plain path means SQLite
    try:
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            # docs/storage.md: busy_timeout=10000, journal_mode=WAL, foreign_keys=ON and synchronous=FULL.
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10000
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
        await store.create_tenant("t", actor="admin")
        assert path.exists() and path.with_name("wal.db-wal").exists()
    finally:
        await store.close()


async def test_database_enforces_that_a_keys_team_belongs_to_its_tenant(store):
    """Structural isolation: even a buggy caller cannot attach tenant A's team to tenant B's key."""
    a = await store.create_tenant("a", actor="admin")
    b = await store.create_tenant("b", actor="admin")
    team_a = await store.create_team(a.id, "ml", actor="admin")
    from multihome.storage.tables import api_keys

    with pytest.raises(sa.exc.IntegrityError):
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.insert(api_keys).values(
                    id="key_x",
                    tenant_id=b.id,
                    team_id=team_a.id,
                    name="x",
                    prefix="xxxxxxxx",
                    hash="0" * 64,
                    roles=["member"],
                    metadata={},
                    created_at=a.created_at,
                )
            )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_policies_stored_before_0025_become_the_org_admins(kind, sqlite_database, pg_database):
    """Migration 0025 records who set each policy: a policy stored before it (an org's "EU only" rule, say)
    is kept as it was and counts as the org-admin's, so a tenant-admin can neither change nor delete it."""
    import datetime

    from multihome.storage.engine import create_engine
    from multihome.storage.policies import PolicyOutranked
    from multihome.storage.tables import policies, tenants

    db_url = sqlite_database(migrated=False) if kind == "sqlite" else pg_database(migrated=False)
    await asyncio.to_thread(migrate_sync, db_url, "0024")
    now = datetime.datetime.now(datetime.UTC)
    rules = {"egress": [{"effect": "allow", "data_zones": ["EU"]}]}
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:  # the columns 0024 has: no set_by_role
            await conn.execute(sa.insert(tenants).values(id="ten_old", name="acme", metadata={}, created_at=now))
            for pid in ("pol_eu", "pol_other"):
                await conn.execute(
                    sa.insert(policies).values(
                        id=pid,
                        tenant_id="ten_old",
                        scope="tenant",
                        scope_id="ten_old",
                        rules=rules,
                        description="EU only",
                        created_at=now,
                        updated_at=now,
                    )
                )
    finally:
        await engine.dispose()
    await asyncio.to_thread(migrate_sync, db_url)
    store = await open_store(db_url)
    try:
        stored = list(await store.page_policies("ten_old", 1000))
        assert [(p.id, p.rules, p.description, p.set_by_role) for p in stored] == [
            ("pol_eu", rules, "EU only", "org-admin"),
            ("pol_other", rules, "EU only", "org-admin"),
        ]
        with pytest.raises(PolicyOutranked):
            await store.update_policy("ten_old", "pol_eu", rules={"egress": []}, actor="t", role="tenant-admin")
        with pytest.raises(PolicyOutranked):
            await store.delete_policy("ten_old", "pol_eu", actor="t", role="tenant-admin")
        assert (await store.get_policy("ten_old", "pol_eu")).rules == rules
        await store.delete_policy("ten_old", "pol_eu", actor="root", role="org-admin")  # an org-admin still may
        mine = await store.create_policy("ten_old", scope="tenant", rules=rules, actor="t", role="tenant-admin")
        assert mine.set_by_role == "tenant-admin"
        await store.delete_policy("ten_old", mine.id, actor="t", role="tenant-admin")
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_tenant_admin_budgets_on_privileged_keys_become_the_org_admins_at_0026(
    kind, sqlite_database, pg_database
):
    """Migration 0026: a budget a tenant-admin set, before the rule that refuses it, on a key holding a role
    only an org-admin grants (or roles that cannot be read) is the org-admin's; one on an ordinary key stays
    the tenant-admin's."""
    import datetime

    from multihome.storage.engine import create_engine
    from multihome.storage.tables import api_keys, budgets, tenants

    db_url = sqlite_database(migrated=False) if kind == "sqlite" else pg_database(migrated=False)
    await asyncio.to_thread(migrate_sync, db_url, "0025")
    now = datetime.datetime.now(datetime.UTC)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(tenants).values(id="ten_old", name="acme", metadata={}, created_at=now))
            for n, (key_id, roles) in enumerate(
                (("key_aud", ["auditor"]), ("key_org", ["org-admin", "member"]), ("key_mem", ["member"]))
            ):
                await conn.execute(
                    sa.insert(api_keys).values(
                        id=key_id,
                        tenant_id="ten_old",
                        name=key_id,
                        prefix=f"p{n}xxxxxx",
                        hash=str(n) * 64,
                        roles=roles,
                        metadata={},
                        created_at=now,
                    )
                )
                await conn.execute(
                    sa.insert(budgets).values(
                        id=f"bud_{key_id}",
                        tenant_id="ten_old",
                        scope="key",
                        scope_id=key_id,
                        amount="5",
                        currency="USD",
                        period="day",
                        mode="hard",
                        created_at=now,
                        updated_at=now,
                        set_by_role="tenant-admin",
                    )
                )
    finally:
        await engine.dispose()
    await asyncio.to_thread(migrate_sync, db_url)
    store = await open_store(db_url)
    try:
        setters = {b.id: b.set_by_role for b in await store.list_budgets("ten_old")}
        assert setters == {"bud_key_aud": "org-admin", "bud_key_org": "org-admin", "bud_key_mem": "tenant-admin"}
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_console_session_ends_stored_before_0028_keep_meaning_what_they_meant(kind, sqlite_database, pg_database):
    """Migration 0028 names the issuer of a cut-off's subject and the role that set it. A cut-off stored before
    it named a subject of any issuer and was an org-admin's (only an org-admin could end sessions): it still
    ends that subject of every issuer, and ends an org-admin's session too; a logout names no role."""
    import datetime
    import time

    from multihome.storage.console_sessions import SessionEndIndex
    from multihome.storage.engine import create_engine
    from multihome.storage.tables import console_session_ends

    db_url = sqlite_database(migrated=False) if kind == "sqlite" else pg_database(migrated=False)
    await asyncio.to_thread(migrate_sync, db_url, "0027")
    now = datetime.datetime.now(datetime.UTC)
    later = now + datetime.timedelta(hours=1)
    old = {"tenant_id": None, "reason": "", "actor": "root", "created_at": now, "expires_at": later}
    old |= {"session_id": None, "subject": None, "not_before": None}
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:  # the columns 0027 has: no issuer, no set_by_role
            await conn.execute(
                sa.insert(console_session_ends),
                [
                    {**old, "id": "cse_sub", "kind": "subject", "subject": "alice", "not_before": now},
                    {**old, "id": "cse_all", "kind": "all", "not_before": now - datetime.timedelta(hours=2)},
                    {**old, "id": "cse_out", "kind": "session", "session_id": "sid-1", "subject": "key_a"},
                ],
            )
    finally:
        await engine.dispose()
    await asyncio.to_thread(migrate_sync, db_url)
    store = await open_store(db_url)
    try:
        rows = {r.id: r for r in await store.page_console_session_ends(1000)}
        assert {i: (r.issuer, r.set_by_role) for i, r in rows.items()} == {
            "cse_sub": (None, "org-admin"),
            "cse_all": (None, "org-admin"),
            "cse_out": (None, None),
        }
        index = SessionEndIndex((await store.snapshot()).session_ends)
        issued = now.timestamp() - 60
        for issuer in ("https://a.example", "https://b.example", "api_key"):
            assert index.ended("s", "alice", "ten_a", issued, issuer=issuer, roles=frozenset({"org-admin"}))
        assert not index.ended("s", "bob", "ten_a", issued)  # after the org-wide cut-off
        assert index.ended("sid-1", "key_a", "ten_a", time.time())
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_0029_on_a_database_with_rows_and_back(kind, sqlite_database, pg_database):
    """Migration 0029 on a database with governance rows: a replica's first load reads them all (they have no
    recorded changes), later loads only what changed; it goes down to 0028 and up again."""
    import datetime

    from multihome.storage import SnapshotCache
    from multihome.storage.engine import create_engine
    from multihome.storage.tables import state_version, tenants

    db_url = sqlite_database(migrated=False) if kind == "sqlite" else pg_database(migrated=False)
    await asyncio.to_thread(migrate_sync, db_url, "0028")
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            now = datetime.datetime.now(datetime.UTC)
            await conn.execute(sa.insert(tenants).values(id="ten_old", name="old", metadata={}, created_at=now))
            await conn.execute(sa.update(state_version).values(version=41))
    finally:
        await engine.dispose()
    await asyncio.to_thread(migrate_sync, db_url)
    store, replica = await open_store(db_url), await open_store(db_url)
    try:
        cache = SnapshotCache(replica, interval_s=3600)
        assert set((await cache.refresh()).tenants) == {"ten_old"}
        new = await store.create_tenant("new", actor="admin")
        snap = await cache.refresh()
        assert set(snap.tenants) == {"ten_old", new.id} and snap.held.read["tenants"] == 1
    finally:
        await store.close()
        await replica.close()
    await _downgrade(db_url, "0028")  # (alembic's: the CLI has no downgrade)
    assert await asyncio.to_thread(migrate_sync, db_url) == HEAD
    store = await open_store(db_url)
    try:
        await store.create_tenant("after", actor="admin")
        assert len((await store.snapshot()).tenants) == 3
    finally:
        await store.close()


async def _downgrade(db_url: str, target: str) -> None:
    from alembic import command

    from multihome.storage.engine import create_engine
    from multihome.storage.migrate import alembic_config

    def down(conn) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, target)

    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(down)
        assert await current_revision(engine) == target
    finally:
        await engine.dispose()
