"""The gateway app in process on a stored configuration (a SQLite file or a fresh PostgreSQL database),
for tests that break stored rows with SQL and watch what the app makes of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from builders import database, identity, simulated, single, typed
from multihome.app import build_app
from multihome.simulators import SimulatorConfig, start_simulator

STORES = ["sqlite", "postgresql"]  # the fixtures' params


def store_url(request, tmp_path) -> str:
    """The store of the fixture's param: an unmigrated PostgreSQL database, or a SQLite file."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_database")(migrated=False)
    return f"sqlite+aiosqlite:///{tmp_path}/mh.db"


@asynccontextmanager
async def stored_app(url: str, admin_env: str, headers: dict | None = None, **fields: Any) -> AsyncIterator[tuple]:
    """(an httpx client of the app, the app), started against one simulated upstream, with the admin
    key in `admin_env`; `fields`: more of `single`'s (e.g. group_fields). Closed in reverse."""
    sim = await start_simulator(SimulatorConfig(kind="openai", name="up"))
    cfg = single(
        simulated("openai", sim.url, region="us-east-1", data_zone="US"),
        storage=database(url, refresh_s=0.05),
        identity=identity(admin_env),
        **fields,
    )
    app = build_app(typed(cfg))
    for service in app.services:
        await service.start()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers, timeout=30) as client:
            yield client, app
    finally:
        for service in reversed(app.services):
            await service.close()
        await sim.close()
