"""Redis and PostgreSQL outages under the three-replica cluster (docs/deploy.md "Outages"), through the
balancer with the openai SDK and the admin API. Each outage is bounded: calls counted, waits polled
with deadlines.

- Redis down, `metering.fail_open: true` (the default): every call is admitted, limits unenforced;
  when Redis returns empty, counters are re-seeded from the stored usage, so the budget still holds.
- Redis down, `fail_open: false`: calls that a budget or rate limit applies to get 503
  `limits_unavailable`; calls no limit applies to are served; all admitted again once it returns.
- PostgreSQL down: static and managed keys keep serving from memory, usage rows wait in the writers'
  queues and are all written once it returns; admin changes are refused with an error, never a 500.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from e2e.helpers import until

from .cluster import ADMIN_KEY, BUDGET, BUDGET_KEY, CLIENT_KEY, Cluster
from .test_cluster import _chat, _client, _started_ids, _usage_ids, _verify_audit


def _calls(cluster: Cluster, key: str, model: str, n: int, **extra) -> list[tuple[int, str]]:
    async def run():
        client = _client(cluster, key)
        try:
            return [await _chat(client, model, **extra) for _ in range(n)]
        finally:
            await client.close()

    return asyncio.run(asyncio.wait_for(run(), 120))


def _spent(cluster: Cluster) -> float:
    rows = cluster.sql("SELECT coalesce(sum(cost_nanos), 0) FROM usage_calls WHERE key_id = 'env:MH_CL_BUDGET'")
    return int(rows[0]) / 1e9


def test_redis_down_fail_open_admits_then_counters_reconcile(cluster: Cluster):
    before = _calls(cluster, BUDGET_KEY, "budgeted", 6, max_tokens=32)
    assert [s for s, _ in before] == [200] * 6
    cluster.stop_redis()
    # Fail open: the budgeted key, the rate-limited group and everyone else are served.
    during = _calls(cluster, BUDGET_KEY, "budgeted", 6, max_tokens=32) + _calls(cluster, CLIENT_KEY, "limited", 6)
    during += _calls(cluster, CLIENT_KEY, "chat", 6)
    assert [s for s, _ in during] == [200] * 18, during
    cluster.start_redis()  # back empty: the replicas re-seed budgets and this minute's rates from usage rows
    after: list[int] = []
    for _ in range(100):  # bounded: the budget allows a few dozen calls
        status, _ = _calls(cluster, BUDGET_KEY, "budgeted", 1, max_tokens=32)[0]
        after.append(status)
        if status == 429:
            break
    assert 429 in after, "the budget is enforced again once Redis is back"
    cluster.stop_replicas()
    # The spend during the outage was counted when the counters were re-seeded: the budget held overall.
    assert _spent(cluster) <= float(BUDGET)
    answered = {rid for s, rid in before + during if s == 200}
    assert not answered - _usage_ids(cluster)
    assert not answered - _started_ids(cluster)


@pytest.fixture
def fail_closed(tmp_path, pg_server):
    with Cluster(tmp_path, fail_open=False, pg=pg_server) as c:
        yield c


def test_redis_down_fail_closed_refuses_limited_calls_only(fail_closed: Cluster):
    cluster = fail_closed
    assert _calls(cluster, BUDGET_KEY, "budgeted", 1, max_tokens=32)[0][0] == 200
    cluster.stop_redis()
    refused = _calls(cluster, BUDGET_KEY, "budgeted", 3, max_tokens=32) + _calls(cluster, CLIENT_KEY, "limited", 3)
    assert [s for s, _ in refused] == [503] * 6, refused
    r = httpx.post(
        cluster.url + "/v1/chat/completions",
        json={"model": "limited", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=30,
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable", r.text
    # No limit applies to the client key on `chat`: served throughout.
    assert [s for s, _ in _calls(cluster, CLIENT_KEY, "chat", 6)] == [200] * 6
    cluster.start_redis()
    until(
        lambda: _calls(cluster, BUDGET_KEY, "budgeted", 1, max_tokens=32)[0][0] == 200,
        what="admission after Redis returns",
    )
    assert [s for s, _ in _calls(cluster, CLIENT_KEY, "limited", 3)] == [200] * 3


def test_postgres_down_keys_serve_from_memory_and_usage_drains_after(cluster: Cluster):
    admin = httpx.Client(base_url=cluster.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    try:
        tenant = admin.post("/admin/v1/tenants", json={"name": "acme"}).json()["id"]
        made = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "app"})
        assert made.status_code == 201, made.text
        managed = made.json()["key"]
        # Every replica knows the key (within storage.refresh_s) before the database goes.
        until(
            lambda: all(s == 200 for s, _ in _calls(cluster, managed, "chat", 3)),
            what="the managed key on every replica",
        )
        cluster.stop_database()
        during = _calls(cluster, managed, "chat", 9) + _calls(cluster, CLIENT_KEY, "chat", 9)
        assert [s for s, _ in during] == [200] * 18, during
        # An admin change needs the database: refused with an error (not a 500), nothing half-done.
        refused = admin.post("/admin/v1/tenants", json={"name": "during-outage"})
        assert refused.status_code == 503, (refused.status_code, refused.text)
        cluster.start_database()
        answered = {rid for s, rid in during if s == 200}
        # The queued usage rows are written once the database is back, without a restart.
        until(lambda: not answered - _usage_ids(cluster), timeout=90, what="the outage's usage rows")
        assert admin.post("/admin/v1/tenants", json={"name": "after-outage"}).status_code == 201
    finally:
        admin.close()
    cluster.stop_replicas()
    assert not answered - _started_ids(cluster)
    _verify_audit(cluster)
