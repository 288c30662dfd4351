"""`GET /metrics` with `metrics.access: key` read by a tenant's auditor: only its own tenant's series.

An auditor's role is a tenant's: its key belongs to one tenant (an org-admin issues it). The exposition names
every tenant's tokens, cost and budget headroom (the tenant's id, and a key's id for a key's budget), so
before the fix a tenant's auditor key read every other tenant's spend. Now its
scrape holds the series labelled with its tenant only (none without a tenant label: those count every
tenant's calls together); an org-admin's holds everything. Two tenants calling through the official openai
SDK against the app in process, on SQLite (nothing here is about the database)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from admin_http import error, ok
from multihome.observability.metrics_view import OTHER, TenantView
from stored_app import StoredWorld, stored_world

ADMIN_ENV = "MH_TEST_METRICS_TENANTS"
ADMIN_KEY = "mh-bootstrap-admin-key-for-metrics-tenants"
DEADLINE = 30  # seconds: a condition polled for


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)


def _series(text: str) -> list[tuple[str, dict[str, str]]]:
    return [(s.name, s.labels) for family in text_string_to_metric_families(text) for s in family.samples]


async def _scrape(w: StoredWorld, key: str) -> httpx.Response:
    return await w.client.get("/metrics", headers={"authorization": f"Bearer {key}"})


def ok_text(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.text


async def _call(transport, key: str) -> None:
    sdk = openai.AsyncOpenAI(
        api_key=key,
        base_url="http://gw/v1",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport, base_url="http://gw/v1", timeout=30),
    )
    answer = await sdk.chat.completions.create(model="g", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices
    await sdk.close()


@pytest.mark.anyio
async def test_a_tenants_auditor_scrapes_its_own_tenants_series_only(tmp_path):
    async with stored_world(
        f"sqlite+aiosqlite:///{tmp_path}/mh.db",
        ADMIN_ENV,
        ADMIN_KEY,
        deployment_fields={"price": {"input": 1, "output": 2}},
        metrics={"enabled": True, "access": "key"},
    ) as (w, _, transport):
        alpha, alpha_admin = await w.tenant("alpha")
        beta, beta_admin = await w.tenant("beta")
        keys = f"/admin/v1/tenants/{beta}/keys"
        beta_key = (await ok(await w.call("GET", keys)))["data"][0]["id"]
        budget = {"scope": "key", "scope_id": beta_key, "amount": "5"}
        await ok(await w.call("POST", f"/admin/v1/tenants/{beta}/budgets", json=budget), 201)
        for key in (alpha_admin, beta_admin):
            await _call(transport, key)
        # The org-admin's scrape: both tenants' tokens, beta's key budget (its key's id a label value).
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while True:
            everything = ok_text(await _scrape(w, ADMIN_KEY))
            tokens = {lab.get("tenant") for name, lab in _series(everything) if name == "multihome_tokens_total"}
            if {alpha, beta} <= tokens:
                break
            assert asyncio.get_running_loop().time() < deadline, tokens
            await asyncio.sleep(0.05)
        assert beta_key in everything

        # alpha's tenant-admin may not scrape (403), nor issue an auditor key (an org-admin grants the role).
        assert error(await _scrape(w, alpha_admin), 403)["code"] == "metrics_forbidden"
        keys, body = f"/admin/v1/tenants/{alpha}/keys", {"name": "s", "roles": ["auditor"]}
        assert error(await w.call("POST", keys, alpha_admin, json=body), 403)["code"] == "insufficient_role"
        auditor = (await ok(await w.call("POST", keys, json=body), 201))["key"]
        mine = ok_text(await _scrape(w, auditor))
        # Before the fix: every tenant's series, beta's id and its key's id among them.
        assert beta not in mine and beta_key not in mine
        series = _series(mine)
        assert {lab.get("tenant") for _, lab in series} == {alpha}, series
        assert any(name == "multihome_tokens_total" for name, _ in series), series
        assert any(name == "multihome_cost_total" for name, _ in series), series
        # OpenMetrics, as a scraper may ask for it, is narrowed the same way.
        om = await w.client.get(
            "/metrics",
            headers={"authorization": f"Bearer {auditor}", "accept": "application/openmetrics-text; version=1.0.0"},
        )
        assert om.status_code == 200 and beta not in om.text and alpha in om.text


def test_a_tenant_view_keeps_only_that_tenants_samples_in_either_format():
    registry = CollectorRegistry()
    tokens = Counter("t", "tokens", ["tenant", "type"], registry=registry)
    tokens.labels("ten_a", "input").inc(3)
    tokens.labels("ten_b", "input").inc(5)
    tokens.labels(OTHER, "input").inc(7)
    Gauge("breaker", "every tenant's", ["deployment"], registry=registry).labels("d").set(2)
    for encode in (generate_latest, openmetrics):
        series = _series(encode(TenantView(registry, "ten_a")).decode())
        assert series and {lab["tenant"] for _, lab in series} == {"ten_a"}, series
        assert not _series(encode(TenantView(registry, OTHER)).decode())  # 'other' is many tenants, not one
    assert "ten_b" in generate_latest(registry).decode()  # the registry itself is not narrowed
