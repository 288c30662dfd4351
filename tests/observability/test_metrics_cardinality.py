"""docs/metrics.md "Label values are bounded", through the whole app: a client naming a new model, path, user
agent, key, admin path or console page on every request adds no series to `/metrics`, and none of its values
appears in the exposition. In process, on SQLite, the official SDK's shapes of request."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stored_app import stored_world

pytestmark = pytest.mark.anyio
ADMIN_ENV = "MH_TEST_METRICS_CARDINALITY"
ADMIN_KEY = "mh-bootstrap-admin-key-for-metrics-cardinality"
DISTINCT = 1000  # of each kind of value


def _series(text: str) -> set[tuple[str, tuple]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text) for s in f.samples}


async def test_values_a_client_chooses_add_no_series(tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    async with stored_world(
        f"sqlite+aiosqlite:///{tmp_path}/mh.db", ADMIN_ENV, ADMIN_KEY, metrics={"enabled": True, "access": "open"}
    ) as (w, _, _transport):
        _, key = await w.tenant("alpha")
        c, auth = w.client, {"authorization": f"Bearer {key}"}
        chat = {"messages": [{"role": "user", "content": "x"}]}

        async def round_of(tag: str) -> None:
            ua = {**auth, "user-agent": f"agent-{tag}"}
            await c.post("/v1/chat/completions", headers=ua, json={"model": f"model-{tag}", **chat})
            await c.post("/v1/embeddings", headers=auth, json={"model": f"embed-{tag}", "input": "x"})
            anthropic = {"model": f"claude-{tag}", "max_tokens": 5, **chat}
            await c.post("/v1/messages", headers=auth, json=anthropic)
            await c.post("/v1/responses", headers=auth, json={"model": f"resp-{tag}", "input": "x"})
            await c.get(f"/v1/models/listed-{tag}", headers=auth)
            await c.get(f"/path-{tag}", headers=auth)
            await c.get(f"/admin/v1/tenants/tenant-{tag}", headers=auth)
            await c.get(f"/console/page-{tag}")
            await c.post("/v1/chat/completions", headers={"authorization": f"Bearer key-{tag}"}, json=chat)

        for tag in ("warm-1", "warm-2"):  # every route and status once: the series a first call makes
            await round_of(tag)
        await c.get("/metrics")  # the scrape's own route is counted from the next one on
        # What the warm-up rounds made, once a scrape shows no series the one before it did not (a series
        # recorded as its call is finished off the answer's path would otherwise be counted as the clients').
        before, deadline = _series((await c.get("/metrics")).text), time.monotonic() + 60
        while (again := _series((await c.get("/metrics")).text)) != before:
            assert time.monotonic() < deadline, sorted(again ^ before)[:10]
            before = again
            await asyncio.sleep(0.05)
        for i in range(DISTINCT):
            await round_of(f"x{i}")
        text = (await c.get("/metrics")).text
        after = _series(text)
        assert after - before == set(), sorted(after - before)[:10]
        assert not [v for v in ("model-x7", "agent-x7", "path-x7", "tenant-x7", "page-x7", "key-x7") if v in text]
