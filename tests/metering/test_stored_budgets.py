"""Budgets set through the admin API reach the limiter through the storage snapshot: enforced as
soon as they appear (seeded from stored usage), raised without losing what was spent, removed,
and combined with the config budgets (the smaller amount of one counter wins)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from multihome.config.metering import BudgetRule, MeteringConfig
from multihome.metering.counters import LocalCounters
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.rules import AdminBudget
from multihome.metering.service import Metering
from multihome.schema.errors import ApiError
from multihome.storage import SnapshotCache, open_store
from polls import Polls  # tests/ is on sys.path (rootdir conftest)

from .conftest import Dep, call, principal

pytestmark = pytest.mark.anyio
PRICES = PriceTable({"dep-a": DeploymentPrice.of("2.5", "10", None, "USD")})  # per 1M tokens
PLAN = [Dep("dep-a")]
# One call of 1000 prompt + 100 completion tokens costs 0.0025 + 0.001 = 0.0035.
# Admitting 100 prompt + 100 output tokens reserves (ceil(125) + 16) * 2.5 + 100 * 10 per 1M = 0.0013525.


class World:
    """One replica: a store, its snapshot cache, and metering fed by it."""

    async def start(self, url: str, budgets=lambda key: [], counters=None, prefix="mh:") -> World:
        self.store = await open_store(url, migrate=True)
        self.tenant = (await self.store.create_tenant(f"t-{uuid.uuid4().hex[:6]}", actor="admin")).id
        self.key = (await self.store.create_key(self.tenant, name="k", actor="admin"))[0].id
        self.who = principal(tenant=self.tenant, key_id=self.key)
        self.cache = SnapshotCache(self.store, interval_s=0.05)
        await self.cache.start()
        cfg = MeteringConfig(budgets=budgets(self.key), key_prefix=prefix)
        self.m = Metering(cfg, PRICES, storage_url=url, snapshots=self.cache, counters=counters)
        await self.m.start()
        return self

    async def apply(self) -> None:
        """What the admin API does after a change: reload the snapshot, then apply its budgets."""
        await self.cache.refresh()
        await self.m.refresh_budgets()

    async def admit(self, rid: str):
        return await self.m.limiter.admit(self.who, "g", PLAN, 100, 100, rid)

    def spend(self, rid: str) -> None:  # a call that cost 0.0035, recorded (admitted or not)
        self.m.record(call(rid, prompt=1000, completion=100, tenant=self.tenant, key_id=self.key))

    async def counter(self, period="day") -> int:
        from multihome.metering.periods import period as at

        lim = self.m.limiter
        key = f"{lim.rules.prefix}b:key:{self.tenant}:{self.key}:{period}:USD:{at(period, lim.clock()).bucket}"
        return (await lim.counters.read([key], int(lim.clock() * 1000)))[0]

    async def stop(self) -> None:
        await self.m.close()
        await self.cache.stop()
        await self.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, sqlite_database, pg_database):
    return sqlite_database("m.db") if request.param == "sqlite" else pg_database()


async def refused(w: World, rid: str) -> bool:
    try:
        (await w.admit(rid)).release()
        return False
    except ApiError as exc:
        assert exc.status == 429 and exc.body.code == "budget_exceeded", exc.body
        return True


async def test_stored_budget_is_seeded_enforced_raised_and_removed(url):
    w = await World().start(url)
    try:
        assert not await refused(w, "warm")  # no budget yet; this also fills the limiter's caches for the key
        w.spend("before")  # spent before any budget existed

        b = await w.store.create_budget(
            w.tenant, scope="key", scope_id=w.key, amount="0.004", period="day", actor="admin"
        )
        await w.apply()
        assert [a.budget_id for a in w.m.admin_budgets] == [b.id]
        assert await w.counter() == 3_500_000  # seeded from the stored usage row
        assert await refused(w, "r1")  # 0.0035 spent + 0.0013525 reserved > 0.004

        await w.store.update_budget(w.tenant, b.id, amount="1", actor="admin")
        await w.apply()
        assert await w.counter() == 3_500_000  # raising keeps what was spent
        ticket = await w.admit("r2")
        assert ticket.reserved and await w.counter() == 3_500_000 + 1_352_500
        w.spend("r2")
        assert await w.counter() == 7_000_000

        await w.store.update_budget(w.tenant, b.id, amount="0.005", mode="soft", actor="admin")
        await w.apply()
        soft = await w.admit("r3")  # a soft budget allows and flags
        assert soft.over_budget and "key " + w.key in soft.warnings[0]
        soft.release()

        await w.store.delete_budget(w.tenant, b.id, actor="admin")
        await w.apply()
        assert w.m.admin_budgets == ()
        free = await w.admit("r4")
        assert free.reserved == [] and not free.over_budget  # no limit left on the key
        free.release()
    finally:
        await w.stop()


async def test_stored_budgets_are_enforced_from_start_up_with_the_periods_spend(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'up.db'}"
    w = await World().start(url)
    try:
        w.spend("before")
        await w.store.create_budget(w.tenant, scope="key", scope_id=w.key, amount="0.004", period="day", actor="admin")
        await w.m.close()  # a restart, with an empty in-process counter
        await w.cache.refresh()
        w.m = Metering(MeteringConfig(), PRICES, storage_url=url, snapshots=w.cache)
        await w.m.start()
        assert len(w.m.admin_budgets) == 1 and await w.counter() == 3_500_000
        assert await refused(w, "r1")
    finally:
        await w.stop()


async def test_a_budget_made_on_another_replica_is_enforced_here_from_its_next_poll(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    w = await World().start(url)
    other = await open_store(url)
    try:
        w.spend("before")
        await w.m.flush()
        reloads = w.cache.reloads
        polls = Polls(w.store)
        await other.create_budget(w.tenant, scope="tenant", amount="0.001", period="month", actor="admin")
        polls.mark()
        made = time.monotonic()
        while w.cache.reloads == reloads and time.monotonic() - made < 60:
            await asyncio.sleep(0.01)
        assert polls.since_mark() <= 1, "the snapshot cache missed the change at its first poll after it"
        # The limiter follows the cache's reload (a listener), with no poll of its own.
        while not w.m.admin_budgets and time.monotonic() - made < 60:
            await asyncio.sleep(0.01)
        assert w.m.admin_budgets, "the budget did not reach this replica's limiter"
        assert await refused(w, "r1")
    finally:
        await other.close()
        await w.stop()


async def test_smaller_amount_of_one_counter_wins_and_explicit_replaces_star(tmp_path):
    def config(key):
        return [
            BudgetRule(scope="key", id=key, amount="1", period="day"),
            BudgetRule(scope="tenant", id="*", amount="100", period="month"),
        ]

    w = await World().start(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", budgets=config)
    try:

        def rules_for(scope, ident):
            specs = w.m.limiter.rules.budgets_for(scope, ident, w.tenant)
            return [(type(s.rule).__name__, s.rule.amount, s.period) for s in specs]

        assert rules_for("key", w.key) == [("BudgetRule", "1", "day")]
        b = await w.store.create_budget(
            w.tenant, scope="key", scope_id=w.key, amount="0.5", period="day", actor="admin"
        )
        await w.apply()
        assert rules_for("key", w.key) == [("AdminBudget", "0.5", "day")]  # smaller than the config's 1
        await w.store.update_budget(w.tenant, b.id, amount="5", actor="admin")
        await w.apply()
        assert rules_for("key", w.key) == [("BudgetRule", "1", "day")]  # now the config's is smaller
        await w.store.create_budget(w.tenant, scope="key", scope_id=w.key, amount="10", period="month", actor="admin")
        await w.apply()
        assert rules_for("key", w.key) == [("BudgetRule", "1", "day"), ("AdminBudget", "10", "month")]
        await w.store.create_budget(w.tenant, scope="tenant", amount="7", period="day", actor="admin")
        await w.apply()
        # An explicit rule for an id replaces the "*" rules of its scope, as in config.
        assert rules_for("tenant", w.tenant) == [("AdminBudget", "7", "day")]
        assert rules_for("tenant", "ten_other") == [("BudgetRule", "100", "month")]
        assert all(isinstance(r, AdminBudget) for r in w.m.admin_budgets) and len(w.m.admin_budgets) == 3
    finally:
        await w.stop()


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_seeding_never_overwrites_a_running_counter(tmp_path, request, kind):
    """Another replica's counter (spend plus reservations in flight) wins over the stored usage."""
    counters = LocalCounters() if kind == "local" else RedisCounters(request.getfixturevalue("redis_server").url)
    w = await World().start(
        f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", counters=counters, prefix=f"t{uuid.uuid4().hex[:8]}:"
    )
    try:
        w.spend("before")  # 3.5M nano-units in the usage rows
        from multihome.metering.periods import period

        bucket = period("day", w.m.limiter.clock())
        key = f"{w.m.limiter.rules.prefix}b:key:{w.tenant}:{w.key}:day:USD:{bucket.bucket}"
        await counters.seed([(key, 9_000_000, bucket.expire_ms)])  # what the running counter already holds
        await w.store.create_budget(w.tenant, scope="key", scope_id=w.key, amount="1", period="day", actor="admin")
        await w.apply()
        assert await w.counter() == 9_000_000
    finally:
        await w.stop()


async def test_metering_without_storage_has_only_config_budgets():
    m = Metering(MeteringConfig(budgets=[BudgetRule(scope="tenant", id="ten_a", amount="0.001")]), PRICES)
    await m.start()
    try:
        await m.refresh_budgets()  # nothing to follow
        assert m.admin_budgets == () and [r.amount for r in m.limiter.rules.budget_rules] == ["0.001"]
        with pytest.raises(ApiError):
            await m.limiter.admit(principal(), "g", PLAN, 100, 100, "r1")
    finally:
        await m.close()


async def test_budgets_made_and_deleted_leave_nothing_behind():
    """A tenant admin making and deleting budgets of new ids, over and over: what metering remembers of the
    budgets it seeded is those in force, not every one there ever was."""
    m = Metering(MeteringConfig(), PRICES)
    for i in range(2_000):
        budget = AdminBudget(scope="key", id=f"key-{i}", amount="1", period="day", budget_id=f"bud_{i}", tenant_id="t")
        await m._use_budgets((budget,))  # made (the snapshot holds it) ...
        await m._use_budgets(())  # ... and deleted
    assert len(m._seeded) == 0
    await m._use_budgets((AdminBudget(scope="key", id="k", amount="1", period="day", budget_id="b", tenant_id="t"),))
    assert len(m._seeded) == 1
