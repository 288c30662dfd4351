"""What an attacker with the database sees: no stored plaintext, no data key, in the SQLite file (and
its WAL) or in a PostgreSQL dump, after records were sealed through a store."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
import sqlalchemy as sa

from multihome.crypto import open_keyring
from multihome.storage.engine import create_engine

from .harness import Recording, secret_forms

pytestmark = pytest.mark.anyio
MARKERS = [f"PLAINTEXT-MARKER-{i}-sk-live-abcdef" for i in range(20)]


async def _seal_through_a_store(local_kms, url):
    engine = create_engine(url)
    backends = []

    def build(target, where):
        backends.append(Recording(local_kms.build(target, where)))
        return backends[-1]

    ring = open_keyring(local_kms.config(), engine, build=build)
    records = sa.Table(
        "sealed_records",
        sa.MetaData(),
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40)),
        sa.Column("body", sa.LargeBinary),
    )
    async with engine.begin() as conn:
        await conn.run_sync(records.metadata.create_all)
    for i, marker in enumerate(MARKERS):
        tenant, purpose = f"t{i % 2}", ("responses", "credentials", "memory")[i % 3]
        sealed = await ring.seal(tenant, purpose, "sealed_records", f"rec_{i}", marker.encode() * 3)
        async with engine.begin() as conn:
            await conn.execute(sa.insert(records).values(id=f"rec_{i}", tenant_id=tenant, body=sealed))
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(records))).all()
    for i, row in enumerate(sorted(rows, key=lambda r: int(r.id[4:]))):
        purpose = ("responses", "credentials", "memory")[i % 3]
        assert await ring.open(row.tenant_id, purpose, "sealed_records", row.id, row.body) == MARKERS[i].encode() * 3
    await ring.close()
    await engine.dispose()
    return [p for b in backends for p in b.plaintexts]


def _assert_clean(blob: bytes, plaintexts: list[bytes]) -> None:
    for marker in MARKERS:
        assert marker.encode() not in blob
    for raw in plaintexts:
        assert raw not in blob
    for form in secret_forms(plaintexts):
        assert form.encode() not in blob


async def test_sqlite_file_holds_no_plaintext(local_kms, sqlite_url, tmp_path):
    plaintexts = await _seal_through_a_store(local_kms, sqlite_url)
    assert len(plaintexts) >= 6
    files = [p for p in tmp_path.iterdir() if p.name.startswith("multihome.db")]
    assert files
    blob = b"".join(p.read_bytes() for p in files)
    assert b"sealed_records" in blob and b"MHE" in blob  # the data is there, sealed
    _assert_clean(blob, plaintexts)


@pytest.fixture
def pg_url(pg_database):
    return pg_database()


async def test_postgresql_dump_holds_no_plaintext(local_kms, pg_server, pg_url):
    url = pg_url
    plaintexts = await _seal_through_a_store(local_kms, url)
    dbname = url.rsplit("/", 1)[1]
    done = await asyncio.to_thread(
        subprocess.run,
        [
            *pg_server._as_user,
            str(pg_server.bindir / "pg_dump"),
            "-h",
            pg_server.host,
            "-p",
            str(pg_server.port),
            "-U",
            pg_server.user,
            "-d",
            dbname,
        ],
        capture_output=True,
        timeout=60,
        cwd=pg_server.dir,
        check=True,
    )
    dump = done.stdout
    assert b"sealed_records" in dump and b"data_keys" in dump
    _assert_clean(dump, plaintexts)
