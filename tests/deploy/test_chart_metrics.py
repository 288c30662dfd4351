"""Who reads `/metrics` in the Helm chart's pods (docs/deploy.md, docs/metrics.md): the exposition names every
tenant's tokens, cost and budget headroom, and the chart's NetworkPolicy lets every client of the gateway reach
the port it is served on (clients must: it is the API's port), so a scrape without an org-admin key is refused.
The gateway runs in process with the chart's `metrics` section; the callers come from a pod address."""

from __future__ import annotations

import httpx
import pytest
import yaml
from helm_render import config_yaml, render_objects

from admin_http import error, ok
from stored_app import sdk_client, stored_world

ADMIN_ENV = "MH_TEST_CHART_METRICS"
ADMIN_KEY = "mh-bootstrap-admin-key-for-chart-metrics"
POD = ("10.42.0.17", 51234)  # another pod of the cluster: not loopback


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)


def _chart() -> dict[str, dict]:
    return {o["kind"]: o for o in render_objects() if o["metadata"]["name"] == "mh-multihome"}


def test_the_charts_network_policy_admits_every_caller_to_the_metrics_port():
    """Why the access rule matters: the one ingress rule names a port and no `from` (every source)."""
    objs = _chart()
    (rule,) = objs["NetworkPolicy"]["spec"]["ingress"]
    assert "from" not in rule and [p["port"] for p in rule["ports"]] == [4000]
    assert objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 4000


@pytest.mark.anyio
async def test_a_tenants_client_in_the_cluster_cannot_read_every_tenants_spend(tmp_path):
    metrics = yaml.safe_load(config_yaml(render_objects()))["metrics"]
    async with stored_world(f"sqlite+aiosqlite:///{tmp_path}/mh.db", ADMIN_ENV, ADMIN_KEY, metrics=metrics) as (
        w,
        _,
        transport,
    ):
        alpha, alpha_key = await w.tenant("alpha")
        sdk = sdk_client(alpha_key, transport)
        await sdk.chat.completions.create(model="g", messages=[{"role": "user", "content": "hello"}])
        await sdk.close()
        pod = httpx.ASGITransport(app=w.app, client=POD)
        async with httpx.AsyncClient(transport=pod, base_url="http://gw", timeout=30) as caller:
            # Before: 200 and the exposition, every tenant's id, tokens and cost in it.
            anyone = await caller.get("/metrics")
            assert anyone.status_code == 401 and alpha not in anyone.text, anyone.text[:300]
            member = await caller.get("/metrics", headers={"authorization": f"Bearer {alpha_key}"})
            assert error(member, 403)["code"] == "metrics_forbidden" and alpha not in member.text
            # The scraper the docs describe: an org-admin key (docs/deploy.md "Metrics").
            scraper = await caller.get("/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
            assert scraper.status_code == 200 and "multihome_requests_total" in scraper.text
        assert (await ok(await w.call("GET", "/admin/v1/tenants")))["data"]
