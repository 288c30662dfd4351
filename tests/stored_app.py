"""The gateway app in process on a stored configuration (a SQLite file or a fresh PostgreSQL database),
for tests that break stored rows with SQL and watch what the app makes of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from admin_http import ok
from builders import database, deployment, group, identity, simulated, single, typed
from mcp_server import McpTestServer
from multihome.app import build_app
from multihome.crypto import init_key_file
from multihome.simulators import Fault, SimulatorConfig, start_simulator

STORES = ["sqlite", "postgresql"]  # the fixtures' params
OWN_ADMIN = ("MH_TEST_OWN_ADMIN", "mh-bootstrap-admin-key-of-its-own")  # `param_world`'s admin key: env, key


async def until(check: Callable[[], Awaitable[Any]], what: str, seconds: float) -> Any:
    """`check()`'s first truthy answer, asked every 50 ms; the test fails saying `what` after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


def store_url(request, tmp_path) -> str:
    """The store of the fixture's param, at the head revision: a PostgreSQL database or a SQLite file
    (tmp_path/mh.db), each a copy of one migrated once (conftest.py). What is under test is the app on
    its rows, not migrating (tests/storage/ migrates); a migration per test cost 0.3-1.5 s."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_database")()
    return request.getfixturevalue("sqlite_database")("mh.db")


@asynccontextmanager
async def served(cfg: dict, headers: dict | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any]]:
    """The app of `cfg` in process with its services started (closed in reverse): (an httpx client of
    it, the client's transport, for an SDK client of its own; the app)."""
    app = build_app(typed(cfg))
    for service in app.services:
        await service.start()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers, timeout=30) as client:
            yield client, transport, app
    finally:
        for service in reversed(app.services):
            await service.close()


def sdk_client(key: str, transport: httpx.ASGITransport, timeout: float = 30) -> openai.AsyncOpenAI:
    """The official SDK as a client of the app in process (`transport`: `stored_world`'s), with no retries."""
    http = httpx.AsyncClient(transport=transport, base_url="http://gw/v1", timeout=timeout)
    return openai.AsyncOpenAI(api_key=key, base_url="http://gw/v1", max_retries=0, http_client=http)


@asynccontextmanager
async def stored_world(
    url: str,
    admin_env: str,
    admin_key: str = "",
    headers: dict | None = None,
    *,
    groups: dict[str, str] | None = None,
    **fields: Any,
) -> AsyncIterator[tuple]:
    """(a StoredWorld of the app, its simulated upstream, the client's transport for an SDK client), the
    app started against that upstream with the admin key in `admin_env`: the model group `g` over model `m`,
    and each of `groups` (name: model) over its model there; `fields`: more of `single`'s (e.g.
    group_fields). Closed in reverse."""
    sim = await start_simulator(SimulatorConfig(kind="openai", name="up"))
    cfg = single(
        simulated("openai", sim.url, region="us-east-1", data_zone="US"),
        storage=database(url, refresh_s=0.05),
        identity=identity(admin_env),
        **fields,
    )
    for name, model in (groups or {}).items():
        cfg["deployments"][name] = deployment("p", model)
        cfg["model_groups"][name] = group(name)
    try:
        async with served(cfg, headers) as (client, transport, app):
            yield StoredWorld(client, url, admin_key, app), sim, transport
    finally:
        await sim.close()


@asynccontextmanager
async def agent_world(url: str, key_dir: Path, admin_env: str, admin_key: str, **fields: Any) -> AsyncIterator[tuple]:
    """`stored_world` with a local KMS (its key file in `key_dir`), loopback egress and a real MCP server
    (tests/mcp_server.py): (the StoredWorld, the simulated upstream, the transport, the MCP server);
    `fields`: more config sections."""
    init_key_file(key_dir / "kms.key")
    server = McpTestServer().start()
    kms = {"local": {"key_file": str(key_dir / "kms.key")}}
    egress = {"allow_networks": ["127.0.0.0/8"]}  # the MCP test server listens on loopback
    try:
        async with stored_world(url, admin_env, admin_key, kms=kms, egress=egress, **fields) as (world, sim, transport):
            yield world, sim, transport, server
    finally:
        server.stop()


@asynccontextmanager
async def param_world(request, tmp_path: Path, *, agent: bool = False, **fields: Any) -> AsyncIterator[tuple]:
    """`stored_world` (`agent_world` if `agent`) on the store of the fixture's param (`store_url`), with an
    admin key of its own (`OWN_ADMIN`). `fields`: `stored_world`'s (groups, config sections)."""
    request.getfixturevalue("monkeypatch").setenv(*OWN_ADMIN)
    url = store_url(request, tmp_path)
    world = agent_world(url, tmp_path, *OWN_ADMIN, **fields) if agent else stored_world(url, *OWN_ADMIN, **fields)
    async with world as parts:
        yield parts


@asynccontextmanager
async def hung_world(request, tmp_path: Path, *, agent: bool = False, **fields: Any) -> AsyncIterator[tuple]:
    """`param_world` whose upstream never answers model `m` (group `g`'s): the runs, streams and followers
    of it stay open."""
    async with param_world(request, tmp_path, agent=agent, **fields) as parts:
        parts[1].state.faults.add(Fault(hang=True, match="m"))
        yield parts


@asynccontextmanager
async def stored_app(url: str, admin_env: str, headers: dict | None = None, **fields: Any) -> AsyncIterator[tuple]:
    """(an httpx client of the app, the app) of `stored_world`."""
    async with stored_world(url, admin_env, headers=headers, **fields) as (world, _, _):
        yield world.client, world.app


class StoredWorld:
    """An app of `stored_app` as a test drives it: calls that must never answer 500 (nor show one of
    `secrets`), SQL on its store (a row broken as an operator's edit would), tenants with a key."""

    secrets: tuple[str, ...] = ()

    def __init__(self, client: httpx.AsyncClient, url: str, admin_key: str, app: Any = None) -> None:
        self.client, self.url, self.admin_key, self.app = client, url, admin_key, app

    async def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        auth = {"authorization": f"Bearer {key or self.admin_key}"}
        resp = await self.client.request(method, path, headers=auth, **kw)
        assert resp.status_code < 500, resp.text
        assert not any(s in resp.text for s in self.secrets), "a secret in an answer"
        return resp

    async def sql(self, statement: str, params: dict | None = None) -> None:
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text(statement), params or {})
        finally:
            await engine.dispose()

    async def tenant(self, name: str) -> tuple[str, str]:
        """A tenant and a key of it that may call models and its admin API."""
        tenants = "/admin/v1/tenants"
        tid = (await ok(await self.call("POST", tenants, json={"name": name}), 201))["id"]
        body = {"name": "k", "roles": ["member", "tenant-admin"]}
        return tid, (await ok(await self.call("POST", f"{tenants}/{tid}/keys", json=body), 201))["key"]
