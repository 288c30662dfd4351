"""A replica asked for a key or tenant it has not seen re-reads the database once, in a read begun after
the miss: what another replica created just before is found, even right after another miss."""

from __future__ import annotations

import asyncio

import pytest

from builders import database, single, typed  # tests/ is on sys.path (rootdir conftest)
from multihome.storage.service import StorageService

pytestmark = pytest.mark.anyio


@pytest.fixture
async def service(migrated_url):
    svc = StorageService(typed(single(storage=database(migrated_url))))
    await svc.start()
    yield svc
    await svc.close()


async def test_a_tenant_created_elsewhere_just_after_another_miss_is_found(service, store2):
    assert await service.refresh_after_miss()  # a miss (a made-up tenant), moments before
    made = await store2.create_tenant("new", actor="admin")  # another replica creates a tenant
    assert made.id not in service.known_tenants()
    assert await service.refresh_after_miss()
    assert made.id in service.known_tenants()


async def test_a_miss_during_a_read_waits_for_a_read_begun_after_it(service, store2, monkeypatch):
    assert service.snapshots is not None
    real, began = service.snapshots.refresh, asyncio.Event()
    gate = asyncio.Event()

    async def slow_refresh():
        snap = await real()  # what was there when the read began
        began.set()
        await gate.wait()  # still under way
        return snap

    monkeypatch.setattr(service.snapshots, "refresh", slow_refresh)
    first = asyncio.ensure_future(service.refresh_after_miss())
    await began.wait()
    made = await store2.create_tenant("late", actor="admin")
    monkeypatch.setattr(service.snapshots, "refresh", real)
    second = asyncio.ensure_future(service.refresh_after_miss())  # must not share the read begun before it
    gate.set()
    assert await first and await second
    assert made.id in service.known_tenants()


async def test_a_flood_of_misses_costs_a_bounded_number_of_reads(service, monkeypatch):
    assert service.snapshots is not None
    real, reads = service.snapshots.refresh, []

    async def counted():
        reads.append(1)
        return await real()

    monkeypatch.setattr(service.snapshots, "refresh", counted)
    assert all(await asyncio.gather(*(service.refresh_after_miss() for _ in range(200))))
    assert len(reads) == 1  # all arrived before any read began: one read answers them all
