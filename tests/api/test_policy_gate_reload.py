"""PolicyGate follows the snapshot cache's reloads by itself (it subscribes at start, and reads no
snapshot per call): an entitlement granted in the store licenses the tenant's calls once the cache has
reloaded, without the gate being refreshed; revoked again, the calls are refused again."""

from __future__ import annotations

import asyncio
import datetime as dt

from multihome.api.policy_gate import PolicyGate
from multihome.config import parse_config
from multihome.routing.catalog import Catalog
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal
from multihome.storage.records import Entitlement
from multihome.storage.snapshot import Snapshot, SnapshotCache

CONFIG = """
server: {allow_unauthenticated: true}
providers:
  az: {kind: openai, endpoint: "http://127.0.0.1:9/v1"}
deployments:
  a1: {provider: az, model: m}
model_groups:
  licensed: {deployments: [a1], requires_entitlement: true}
"""
TODAY = dt.datetime.now(dt.UTC).date()
GRANT = Entitlement(
    id="ent_1",
    tenant_id="acme",
    model_group="licensed",
    starts_on=TODAY - dt.timedelta(days=1),
    ends_on=TODAY + dt.timedelta(days=1),
    exclusive=False,
    note="",
    created_at=dt.datetime.now(dt.UTC),
    revoked_at=None,
)


class Store:
    """The two reads SnapshotCache makes of a store."""

    def __init__(self) -> None:
        self.current = Snapshot(1, {}, {}, {}, (), ())

    async def snapshot(self, since: Snapshot | None = None) -> Snapshot:
        return self.current

    async def version(self) -> int:
        return self.current.version


def allowed(gate: PolicyGate, catalog: Catalog) -> bool:
    try:
        gate.admit(Principal(tenant="acme", subject="s", source="key"), catalog.groups["licensed"], "chat")
    except ApiError as err:
        assert err.status == 403
        return False
    return True


async def until(gate: PolicyGate, catalog: Catalog, wanted: bool) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while allowed(gate, catalog) != wanted:
        assert asyncio.get_running_loop().time() < deadline, f"the gate never saw the change (wanted {wanted})"
        await asyncio.sleep(0.01)


def test_the_gate_follows_reloads_of_the_snapshot_cache_without_a_refresh():
    asyncio.run(_follows_reloads())


async def _follows_reloads() -> None:
    store = Store()
    cache = SnapshotCache(store, interval_s=3600)  # polls never: the test reloads it
    await cache.start()
    catalog = Catalog(parse_config(CONFIG))
    gate = PolicyGate(catalog, cache)
    try:
        await gate.start()
        assert not allowed(gate, catalog)  # no entitlement yet
        store.current = Snapshot(2, {}, {}, {}, (), (GRANT,))
        await cache.refresh()
        await until(gate, catalog, True)
        store.current = Snapshot(3, {}, {}, {}, (), ())
        await cache.refresh()
        await until(gate, catalog, False)
    finally:
        await gate.close()
        await cache.stop()
