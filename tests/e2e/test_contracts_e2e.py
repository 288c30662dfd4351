"""Contract terms through the running gateway: real calls are metered, priced and accrued to a
revenue share that stops exactly at its cap; reports come back from the admin API and the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import time
from decimal import Decimal

import httpx
import openai

from builders import api_keys, database_env, identity, price, simulated, single

from .processes import VENV_BIN, Gateway

ADMIN = "contracts-admin-key"
TODAY = dt.datetime.now(dt.UTC).date()

CAPPED_SHARE = {
    "id": "rs-test",
    "parties": ["Us", "Them"],
    "rate": "0.5",
    "basis": {"providers": ["oa"]},
    "starts_on": TODAY - dt.timedelta(days=10),
    "ends_on": TODAY + dt.timedelta(days=300),
    "cap": "100",
    "currency": "USD",
}


def _config(url: str, **sections) -> dict:
    return single(
        simulated("openai", url),
        names=("oa", "d", "gpt-4o"),
        deployment_fields={"price": price(1000000, 1000000)},
        storage=database_env(),
        identity=identity("MH_TEST_ADMIN"),
        server=api_keys("MH_TEST_CLIENT"),
        **sections,
    )


def test_calls_accrue_to_a_capped_revenue_share(tmp_path, simulator, sqlite_database):
    sim = simulator("openai", "oa")
    db = sqlite_database("m.db")  # at the head revision
    contracts = {"flush_interval_s": 0.02, "revenue_share": [CAPPED_SHARE]}
    env = {"MH_TEST_DB": db, "MH_TEST_ADMIN": ADMIN, "MH_TEST_CLIENT": "client-key"}
    gw = Gateway(_config(sim.url, contracts=contracts), tmp_path, env)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        costs = Decimal(0)
        for _ in range(20):  # each call costs tokens x $1 per token: well past a $100 cap at a 50% share
            usage = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).usage
            costs += usage.prompt_tokens + usage.completion_tokens
        admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"})
        expected = min(Decimal(100), costs * Decimal("0.5"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            report = admin.get("/admin/v1/contracts/rs-test/report").json()
            if Decimal(str(report["accrued"])) >= expected:
                break
            time.sleep(0.05)
        assert Decimal(str(report["accrued"])) == expected
        assert Decimal(str(report["remaining"])) == Decimal(100) - expected
        assert costs * Decimal("0.5") > 100, "the calls should have crossed the cap"
        rows = list(csv.DictReader(io.StringIO(admin.get("/admin/v1/contracts/rs-test/report.csv").text)))
        assert rows[0]["contract_id"] == "rs-test" and Decimal(rows[0]["accrued"]) == Decimal(100)
        assert admin.get("/admin/v1/contracts").status_code == 200
    finally:
        gw.stop()
    cfg = next(tmp_path.glob("gateway-*.yaml"))
    out = subprocess.run(
        [str(VENV_BIN / "multihome"), "contracts", "report", "--config", str(cfg), "--csv"],
        capture_output=True,
        text=True,
        env={**env, "PATH": str(VENV_BIN)},
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "rs-test" in out.stdout


def test_a_contract_created_through_the_admin_api_accrues_with_none_in_the_config(tmp_path, simulator, sqlite_database):
    """With storage but no `contracts:` section the ledger still runs: the admin API used to answer
    501 "Contracts need storage" here, and calls would never have accrued."""
    sim = simulator("openai", "oa")
    env = {"MH_TEST_DB": sqlite_database("m.db"), "MH_TEST_ADMIN": ADMIN, "MH_TEST_CLIENT": "client-key"}
    gw = Gateway(_config(sim.url), tmp_path, env)  # no contracts section
    try:
        admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"})
        contract = {
            "kind": "revenue_share",
            "id": "rs-api",
            "parties": ["Us", "Them"],
            "rate": "0.5",
            "basis": {"providers": ["oa"]},
            "starts_on": str(TODAY - dt.timedelta(days=1)),
            "ends_on": str(TODAY + dt.timedelta(days=30)),
            "currency": "USD",
        }
        created = admin.post("/admin/v1/contracts", json=contract)
        assert created.status_code == 201, created.text
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        usage = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).usage
        expected = (usage.prompt_tokens + usage.completion_tokens) * Decimal("0.5")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            report = admin.get("/admin/v1/contracts/rs-api/report").json()
            if Decimal(str(report["accrued"])) >= expected:
                break
            time.sleep(0.05)
        assert Decimal(str(report["accrued"])) == expected
    finally:
        gw.stop()
