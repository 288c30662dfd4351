"""Contracts created through the admin API on a gateway whose config names none: with storage
configured, the API must work (it answered 501 "Contracts need storage: set storage.url" although
storage was set, because the contracts service was only started for agreements in the config;
found by the schemathesis run over the admin document)."""

from __future__ import annotations

import httpx
import pytest

from multihome.app import build_app
from multihome.config import parse_config

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-contracts-api"
CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
identity: {{admin_key_env: MH_TEST_CONTRACTS_ADMIN}}
providers:
  p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}
deployments:
  d: {{provider: p, model: m, price: {{input: 1, output: 2}}}}
model_groups:
  g: {{deployments: [d]}}
"""
AGREEMENT = {"kind": "revenue_share", "id": "rs-api", "parties": ["Us", "Them"], "rate": "0.1",
             "starts_on": "2026-01-01", "ends_on": "2026-12-31"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_an_agreement_can_be_created_and_read_without_any_in_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_CONTRACTS_ADMIN", ADMIN_KEY)
    app = build_app(parse_config(CONFIG.format(tmp=tmp_path)))
    for service in app.services:
        await service.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     headers={"authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            created = await admin.post("/admin/v1/contracts", json=AGREEMENT)
            assert created.status_code == 201, created.text
            listed = (await admin.get("/admin/v1/contracts")).json()["data"]
            assert [a["id"] for a in listed] == ["rs-api"]
            report = await admin.get("/admin/v1/contracts/rs-api/report")
            assert report.status_code == 200 and report.json()["object"] == "contract.report"
    finally:
        for service in reversed(app.services):
            await service.close()
