"""Metering as a CallSink: usage rows through the batched writer (SQLite and PostgreSQL), price
versions that never rewrite the past, budgets that survive a restart, and the contracts hand-off."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from multihome.config.metering import BudgetRule, MeteringConfig, WriterConfig
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering
from multihome.metering.summary import usage_summary
from multihome.metering.tables import usage_calls, usage_price_versions
from multihome.schema.errors import ApiError
from multihome.storage import Invalid, open_store
from multihome.storage.engine import create_engine

from .conftest import Dep, call, principal

pytestmark = pytest.mark.anyio


def prices(a_in="2.5") -> PriceTable:
    return PriceTable({"dep-a": DeploymentPrice.of(a_in, "10", "1.25", "USD")})


async def started(url, table=None, **cfg) -> Metering:
    m = Metering(MeteringConfig(**cfg), table or prices(), storage_url=url)
    await m.start()
    return m


async def rows(m: Metering):
    async with m.engine.connect() as conn:
        return (await conn.execute(sa.select(usage_calls).order_by(usage_calls.c.started_at))).all()


async def test_each_call_becomes_one_row_with_exact_cost_and_price_version(db_url):
    m = await started(db_url)
    handed = []
    m.add_sink(type("Sink", (), {"metered": lambda self, x: handed.append(x)})())
    m.record(call("r1", prompt=1000, completion=333, cached=200, estimated=True))
    m.record(call("r2", deployment="unpriced"))
    await m.flush()
    r1, r2 = await rows(m)
    # 800 * 2.5 + 200 * 1.25 + 333 * 10 per 1M = 0.002 + 0.00025 + 0.00333
    assert (r1.cost, r1.cost_nanos, r1.currency) == ("0.00558", 5_580_000, "USD")
    assert (r1.prompt_tokens, r1.completion_tokens, r1.cached_tokens, r1.estimated) == (1000, 333, 200, True)
    assert r1.price_version == m.prices.version and r1.key_id == "key_a" and r1.latency_ms == 250.0
    assert r2.cost == "0" and r2.cost_nanos == 0
    assert [h.cost for h in handed] == [Decimal("0.00558"), Decimal(0)]
    assert handed[0].call.request_id == "r1" and handed[0].price_version == m.prices.version
    await m.close()


async def test_reasoning_tokens_are_stored_summed_and_priced_once_as_output(db_url):
    # 400 of the 500 completion tokens were reasoning: the row says so, the summary sums it, and the
    # cost is the 500 output tokens once (reasoning is inside completion_tokens, never added again).
    m = await started(db_url)
    m.record(call("think", prompt=1000, completion=500, reasoning=400))
    m.record(call("plain", prompt=1000, completion=500))
    await m.flush()
    think, plain = await rows(m)
    assert (think.completion_tokens, think.reasoning_tokens) == (500, 400)
    assert plain.reasoning_tokens == 0
    assert think.cost == plain.cost == "0.0075"  # 1000 * 2.5 + 500 * 10 per 1M
    [entry] = await usage_summary(m.engine, "ten_a", "model_group")
    assert (entry["completion_tokens"], entry["reasoning_tokens"]) == (1000, 400)
    await m.close()


async def test_a_row_written_twice_is_stored_once(db_url):
    # A retry after an ambiguous commit re-sends rows that may already be stored.
    m = await started(db_url)
    m.record(call("dup", prompt=10))
    await m.flush()
    m.record(call("dup", prompt=10))
    m.record(call("new", prompt=20))
    await m.flush()
    assert [(r.request_id, r.prompt_tokens) for r in await rows(m)] == [("dup", 10), ("new", 20)]
    assert m.writer.written == 3 and m.writer.failures == 0
    await m.close()


async def test_price_change_never_rewrites_past_costs(db_url):
    old = await started(db_url)
    old.record(call("before", prompt=1_000_000, completion=0))
    await old.close()  # close drains the writer
    new = await started(db_url, table=prices("3"))
    new.record(call("after", prompt=1_000_000, completion=0))
    await new.flush()
    before, after = await rows(new)
    assert (before.cost, before.price_version) == ("2.5", old.prices.version)
    assert (after.cost, after.price_version) == ("3", new.prices.version)
    async with new.engine.connect() as conn:
        stored = dict(
            (await conn.execute(sa.select(usage_price_versions.c.version, usage_price_versions.c.prices))).all()
        )
    assert set(stored) == {old.prices.version, new.prices.version} and '"input":"2.5"' in stored[old.prices.version]
    summary = await usage_summary(new.engine, "ten_a", "deployment")
    assert summary[0]["cost"] == "5.5" and summary[0]["calls"] == 2
    await new.close()


async def test_usage_per_hour_and_day_with_errors_and_latency(db_url):
    # The console's charts over time: buckets in UTC, the same text on SQLite and PostgreSQL.
    m = await started(db_url)
    t0 = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC
    m.record(call("a", started=t0, prompt=1_000_000, completion=0))
    m.record(call("b", started=t0 + 60, status=503, outcome="declined", prompt=0, completion=0))
    m.record(call("c", started=t0 + 3600 * 4, prompt=1_000_000, completion=0, deployment="dep-b"))
    await m.flush()
    hourly = await usage_summary(m.engine, "ten_a", "deployment", interval="hour")
    assert [(e["bucket"], e["deployment"], e["calls"], e["errors"]) for e in hourly] == [
        ("2026-05-28T20:00:00Z", "dep-a", 2, 1),
        ("2026-05-29T00:00:00Z", "dep-b", 1, 0),
    ]
    assert hourly[0]["cost"] == "2.5" and hourly[0]["latency_ms_avg"] == 250.0
    daily = await usage_summary(m.engine, "ten_a", "model_group", interval="day")
    assert [(e["bucket"], e["calls"]) for e in daily] == [("2026-05-28T00:00:00Z", 2), ("2026-05-29T00:00:00Z", 1)]
    total = await usage_summary(m.engine, "ten_a", "model_group")
    assert total[0]["calls"] == 3 and total[0]["errors"] == 1 and "bucket" not in total[0]
    await m.close()


async def _summary_pages(m: Metering, tenant: str | None, group_by: str, limit: int, **kw) -> list[list[dict]]:
    pages, page = [], None
    while True:
        found = await usage_summary(m.engine, tenant, group_by, limit=limit, page=page, **kw)
        pages.append(list(found))
        assert len(found) <= limit and len(pages) < 100
        if found.next_page is None:
            return pages
        page = found.next_page


async def test_a_summary_comes_a_page_at_a_time_each_entry_once(db_url):
    """One entry per key, team or hour and deployment: a tenant's 100,000 keys were one answer built whole. The
    pages follow the groups' order, so calls landing between two pages move nothing; a call of no team or no
    deployment (NULL) is an entry like the others."""
    m = await started(db_url)
    t0 = 1_780_000_000.0
    for i in range(7):
        for tenant in ("ten_a", "ten_b"):
            team = None if i == 3 else f"team_{i % 4}"
            deployment = None if i == 5 else f"dep-{i % 2}"
            m.record(
                call(
                    f"{tenant}-{i}",
                    tenant=tenant,
                    key_id=f"key_{i}",
                    team=team,
                    deployment=deployment,
                    started=t0 + 3600 * (i % 3),
                )
            )
    await m.flush()
    asked = (("ten_a", "key", {}), (None, "team", {}), ("ten_a", "deployment", {"interval": "hour"}), (None, "key", {}))
    for tenant, group_by, kw in asked:
        whole = list(await usage_summary(m.engine, tenant, group_by, **kw))
        pages = await _summary_pages(m, tenant, group_by, 3, **kw)
        assert [e for page in pages for e in page] == whole and len(pages) == -(-len(whole) // 3), group_by
        assert sum(e["calls"] for e in whole) == (7 if tenant else 14)
    first = await usage_summary(m.engine, "ten_a", "key", limit=3)
    assert [e["key"] for e in first] == ["key_0", "key_1", "key_2"] and first.next_page
    m.record(call("late", key_id="key_0", started=t0))  # a page already read: the next one does not move
    await m.flush()
    rest = await usage_summary(m.engine, "ten_a", "key", limit=10, page=first.next_page)
    assert [e["key"] for e in rest] == [f"key_{i}" for i in range(3, 7)] and rest.next_page is None
    for bad in ("nope", "W10", first.next_page + "x", "\x00"):
        with pytest.raises(Invalid, match="is not a next_page"):
            await usage_summary(m.engine, "ten_a", "key", limit=3, page=bad)
    await m.close()


async def test_budget_spend_survives_a_restart(db_url):
    rule = [BudgetRule(scope="tenant", id="ten_a", amount="0.01", period="day")]
    m = await started(db_url, budgets=rule)
    ticket = await m.limiter.admit(principal(), "g", [Dep("dep-a")], 100, 100, "r1")
    m.record(call("r1", prompt=1000, completion=900))  # 0.0025 + 0.009 = 0.0115: over the budget by the actual cost
    assert ticket.settled
    await m.close()
    again = await started(db_url, budgets=rule)  # a fresh process: counters seeded from usage rows
    with pytest.raises(ApiError) as refused:
        await again.limiter.admit(principal(), "g", [Dep("dep-a")], 1, 1, "r2")
    assert refused.value.body.code == "budget_exceeded"
    await again.close()


async def test_writer_retries_until_the_database_is_back(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    store = await open_store(url, migrate=True)
    await store.close()
    m = await started(url)
    good = m.writer.engine
    away = tmp_path / "missing"
    away.mkdir()  # create_engine refuses a directory that is not there; it goes once the engine exists
    m.writer.engine = create_engine(f"sqlite+aiosqlite:///{away / 'dir.db'}")
    away.rmdir()  # the database is away: every connection fails
    m.record(call("kept"))
    deadline = time.monotonic() + 60
    while m.writer.failures == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert m.writer.failures >= 1 and len(m.writer.rows) == 1  # the failed batch is kept, not dropped
    await m.writer.engine.dispose()
    m.writer.engine = good  # and back
    await m.flush()
    assert [r.request_id for r in await rows(m)] == ["kept"]
    await m.close()


async def test_full_backlog_refuses_new_calls_instead_of_losing_usage(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    store = await open_store(url, migrate=True)
    await store.close()
    m = await started(url, writer=WriterConfig(max_backlog=2, flush_interval_ms=60_000, batch_size=100))
    m.record(call("a"))
    m.record(call("b"))
    with pytest.raises(ApiError) as refused:
        await m.limiter.admit(principal(), "g", [Dep("dep-a")], 1, 1, "c")
    assert refused.value.status == 503 and refused.value.body.code == "usage_backlog"
    await m.writer.close()  # close drains what was accepted
    assert sorted(r.request_id for r in await rows(m)) == ["a", "b"]
    await m.close()


async def test_admin_usage_summary_and_rbac(db_url):
    from multihome.api.admin.dispatch import AdminApi
    from multihome.api.admin.route import Services
    from multihome.schema.principal import Principal

    rule = [BudgetRule(scope="tenant", id="ten_a", amount="1", period="month")]
    m = await started(db_url, budgets=rule)
    await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, "x1")
    m.record(call("x1", prompt=1000, completion=100, key_id="key_a"))
    m.record(call("x2", prompt=1000, completion=0, key_id="key_b"))
    m.record(call("y1", prompt=1000, completion=0, tenant="ten_b"))
    routes = AdminApi(Services(metering=m))  # no storage: budgets are listed from config and counters

    async def get(path, who, query=b""):
        sent = []

        async def send(msg):
            sent.append(msg)

        scope = {"path": path, "method": "GET", "query_string": query}
        try:
            await routes.handle(scope, None, send, b"req", who)
        except ApiError as exc:
            return exc.status, exc.body.code
        import json

        return sent[0]["status"], json.loads(sent[1]["body"])

    admin_a = Principal(tenant="ten_a", subject="k", source="api_key", roles=frozenset({"tenant-admin"}))
    status, body = await get("/admin/v1/tenants/ten_a/usage", admin_a, b"group_by=key")
    assert status == 200
    assert [(e["key"], e["calls"], e["cost"]) for e in body["data"]] == [("key_a", 1, "0.0035"), ("key_b", 1, "0.0025")]
    status, first = await get("/admin/v1/tenants/ten_a/usage", admin_a, b"group_by=key&limit=1")
    assert [e["key"] for e in first["data"]] == ["key_a"] and first["has_more"] and first["next_page"]
    query = f"group_by=key&limit=1&page={first['next_page']}".encode()
    status, rest = await get("/admin/v1/tenants/ten_a/usage", admin_a, query)
    assert [e["key"] for e in rest["data"]] == ["key_b"] and (rest["has_more"], rest["next_page"]) == (False, None)
    for bad in (b"limit=0", b"limit=1001", b"page=nope"):
        assert await get("/admin/v1/tenants/ten_a/usage", admin_a, b"group_by=key&" + bad) == (400, "invalid_value")
    assert await get("/admin/v1/tenants/ten_b/usage", admin_a) == (403, "other_tenant")
    assert await get("/admin/v1/usage", admin_a) == (403, "insufficient_role")
    assert (await get("/admin/v1/tenants/ten_a/usage", admin_a, b"group_by=nope"))[0] == 400
    status, body = await get("/admin/v1/tenants/ten_a/usage", admin_a, b"start=2999-01-01T00:00:00Z")
    assert body["data"] == []
    status, body = await get("/admin/v1/tenants/ten_a/budgets", admin_a)
    assert [(b["amount"], b["spent_or_reserved"], b["remaining"]) for b in body["data"]] == [("1", "0.0035", "0.9965")]
    assert (body["data"][0]["source"], body["data"][0]["id"], body["data"][0]["in_force"]) == ("config", None, True)
    await m.close()
