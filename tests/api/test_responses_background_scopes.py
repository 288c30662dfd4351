"""A background response is refused at its create (403), as a foreground turn is, when policy refuses its
caller the model: an API key scoped to other model groups or to other endpoints (docs/policy.md). Before,
the create was answered `queued` and stored (the request sealed, a job queued) for a run that policy refused
only later: a key without the `responses` scope could fill the tenant's store and the shared job queue.
The official openai SDK against the app in process, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from admin_http import ok
from builders import config, database, deployment, group, identity, simulated
from multihome.simulators import SimulatorConfig, start_simulator
from stored_app import STORES, StoredWorld, served, store_url

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-background-scopes"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_BG_SCOPES", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path) -> AsyncIterator[tuple]:
    url = store_url(request, tmp_path)
    sim = await start_simulator(SimulatorConfig(kind="openai", name="up"))
    cfg = config(
        storage=database(url, refresh_s=0.05),
        identity=identity("MH_TEST_BG_SCOPES"),
        providers={"p": simulated("openai", sim.url, region="us-east-1", data_zone="US")},
        deployments={"d": deployment("p", "m"), "d2": deployment("p", "m2")},
        model_groups={"g": group("d"), "other": group("d2")},
    )
    try:
        async with served(cfg) as (client, transport, app):
            yield StoredWorld(client, url, ADMIN_KEY, app), sim, transport
    finally:
        await sim.close()


async def _stored(url: str) -> tuple[int, int]:
    """(responses, jobs) in the store."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            responses = await conn.scalar(sa.text("SELECT count(*) FROM responses"))
            jobs = await conn.scalar(sa.text("SELECT count(*) FROM jobs WHERE kind = 'response'"))
    finally:
        await engine.dispose()
    return responses, jobs


@pytest.mark.parametrize(
    ("scopes", "code"),
    [
        pytest.param({"scopes_models": ["other"]}, "model_not_in_key_scope", id="model-scope"),
        pytest.param({"scopes_endpoints": ["chat"]}, "endpoint_not_in_key_scope", id="endpoint-scope"),
    ],
)
async def test_a_background_create_outside_the_keys_scope_is_refused_at_once_and_stores_nothing(world, scopes, code):
    w, sim, transport = world
    tenant, _ = await w.tenant("acme")
    body = {"name": "narrow", "roles": ["member"], **scopes}
    key = (await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/keys", json=body), 201))["key"]
    sdk = openai.AsyncOpenAI(
        api_key=key,
        base_url="http://gw/v1",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport, base_url="http://gw/v1", timeout=30),
    )
    try:
        with pytest.raises(openai.PermissionDeniedError) as refused:  # before: 200, `queued`
            await sdk.responses.create(model="g", input="hello", background=True)
        assert refused.value.body["code"] == code, refused.value.body
        with pytest.raises(openai.PermissionDeniedError) as foreground:  # the same refusal as a foreground turn
            await sdk.responses.create(model="g", input="hello")
        assert foreground.value.body["code"] == code
    finally:
        await sdk.close()
    assert await _stored(w.url) == (0, 0)
    assert sim.state.stats.requests == 0
