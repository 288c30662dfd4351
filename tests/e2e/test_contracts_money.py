"""The money a revenue share accrues, through two running replicas on one database (SQLite, then
PostgreSQL), called with the official openai SDK: a rate of 0.175 on costs of millionths of a dollar,
a cap crossed by concurrent calls on both replicas. Every accrual is cost x rate exactly, they sum to
exactly the cap, one of them is partial, and the ledger's running total equals its rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from builders import api_keys, config, database_env, deployment, group, identity, price, simulated, single, yaml_text
from multihome.contracts.ledger import Ledger
from multihome.metering.tables import usage_calls
from multihome.storage.engine import create_engine

from .helpers import until
from .processes import Gateway, started_together

ADMIN = "contracts-money-admin-key"
RATE = Decimal("0.175")
INPUT, OUTPUT = Decimal("0.15"), Decimal("0.6")  # per 1M tokens: a call costs millionths of a dollar
CALLS = 40
TODAY = dt.datetime.now(dt.UTC).date()
TERM = {"starts_on": str(TODAY - dt.timedelta(days=1)), "ends_on": str(TODAY + dt.timedelta(days=1))}


def _ledger(db_url: str):
    async def read():
        engine = create_engine(db_url)
        try:
            ledger = Ledger(engine)
            return (await ledger.totals(["rs-money"])).get("rs-money"), await ledger.accruals("rs-money")
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_concurrent_calls_on_two_replicas_accrue_exactly_to_the_cap(db_url, tmp_path, simulator):
    sim = simulator("openai", "oa")
    cfg = single(
        simulated("openai", sim.url),
        names=("oa", "d", "gpt-4o"),
        deployment_fields={"price": price(float(INPUT), float(OUTPUT))},
        storage=database_env(refresh_s=0.1),
        identity=identity("MH_TEST_ADMIN"),
        server=api_keys("MH_TEST_CLIENT"),
        contracts={"flush_interval_s": 0.02, "refresh_s": 0.1},
    )
    env = {"MH_TEST_DB": db_url, "MH_TEST_ADMIN": ADMIN, "MH_TEST_CLIENT": "client-key"}
    replicas = started_together(Gateway(cfg, tmp_path, env, wait=False), Gateway(cfg, tmp_path, env, wait=False))
    try:
        clients = [openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0) for gw in replicas]
        admins = [httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"}) for gw in replicas]

        def call(i: int):
            return clients[i % 2].chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "the same question"}]
            )

        # What one call costs (before any agreement: it accrues to none), exactly, from its usage.
        usage = call(0).usage
        assert usage is not None
        cost = (usage.prompt_tokens * INPUT + usage.completion_tokens * OUTPUT) / Decimal(1_000_000)
        # A cap about half-way through the calls, with 9 places: the call that crosses it accrues part.
        cap = (cost * RATE * Decimal("20.5")).quantize(Decimal("0.000000001"))
        contract = {
            "kind": "revenue_share",
            "id": "rs-money",
            "rate": str(RATE),
            "basis": {"providers": ["oa"]},
            **TERM,
            "cap": str(cap),
        }
        created = admins[0].post("/admin/v1/contracts", json=contract)
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 60  # the other replica reads it within refresh_s
        while admins[1].get("/admin/v1/contracts/rs-money").status_code != 200:
            assert time.monotonic() < deadline, "replica 2 never saw the agreement"
            time.sleep(0.05)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(CALLS)))
        assert all(a.usage == usage for a in answers)  # every call costs `cost`

        deadline = time.monotonic() + 60
        while True:
            total, rows = _ledger(db_url)
            if total is not None and total.calls == CALLS:
                break
            assert time.monotonic() < deadline, f"{total} after 60 s"
            time.sleep(0.1)
    finally:
        for gw in replicas:
            gw.stop()

    assert len(rows) == CALLS
    assert all(r.basis == cost and r.requested == cost * RATE for r in rows)  # exact, no rounding
    assert sum((r.amount for r in rows), Decimal(0)) == cap == total.accrued  # exactly the cap, not a cent off
    assert total.requested == cost * RATE * CALLS
    partial = [r for r in rows if 0 < r.amount < r.requested]
    assert len(partial) == 1, partial
    full = [r for r in rows if r.amount == r.requested]
    assert len(full) == 20 and partial[0].amount == cap - 20 * cost * RATE
    assert all(r.amount == 0 for r in rows if r not in full and r not in partial)
    assert total.capped_at == partial[0].at
    assert all(r.price_version for r in rows)


def _accruals(db_url: str, *contracts: str) -> dict[str, dict[str, tuple[Decimal, Decimal]]]:
    """contract -> request id -> (basis, amount), as the ledger holds them."""

    async def read():
        engine = create_engine(db_url)
        try:
            ledger = Ledger(engine)
            return {c: {r.request_id: (r.basis, r.amount) for r in await ledger.accruals(c)} for c in contracts}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_primary_first_accrues_to_the_cloud_that_served_or_billed(db_url, tmp_path, simulator):
    """Primary cloud first, unless it lacks or declines what the call needs: the contract terms follow the
    provider that answered. A call the primary serves burns the primary's commitment; a 429 or a 400
    `unsupported_parameter` from it, or a vision call it lacks the capability for, burns the secondary's only;
    a refusal it answered (200, content_filter) is billed on the primary (`<request id>.1`) and the answer
    served on the secondary, each accruing to its own provider's commitment and to a revenue share over both.
    A plain 400 is the client's: no failover, and nothing accrues."""
    sim = simulator("openai", "up")
    chat_only = ["chat", "streaming", "tools"]
    cfg = config(
        server=api_keys("MH_TEST_CLIENT"),
        identity=identity("MH_TEST_ADMIN"),
        storage=database_env(),
        providers={"primary": simulated("openai", sim.url), "secondary": simulated("openai", sim.url)},
        deployments={
            "p": deployment("primary", "m-primary", price=price(2, 8), capabilities=chat_only),
            "s": deployment("secondary", "m-secondary", price=price(1, 4)),
        },
        model_groups={
            "g": group("p", "s", fail_over_on=["capacity", "unavailable", "unsupported", "refusal"], retries=0)
        },
        contracts={
            "flush_interval_s": 0.02,
            "commitments": [
                {
                    "id": f"{p}-commit",
                    "provider": p,
                    "amount": "1000",
                    **TERM,
                }
                for p in ("primary", "secondary")
            ],
            "revenue_share": [{"id": "rs-both", "rate": "0.175", **TERM}],
        },
    )
    env = {"MH_TEST_DB": db_url, "MH_TEST_ADMIN": ADMIN, "MH_TEST_CLIENT": "client-key"}
    gw = Gateway(cfg, tmp_path, env)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=30)

        def call(content) -> tuple[str, str]:
            raw = client.chat.completions.with_raw_response.create(
                model="g", messages=[{"role": "user", "content": content}]
            )
            return raw.headers["x-request-id"], raw.headers["x-multihome-deployment"]

        served = call("hello")
        sim.fault(status=429, match="m-primary")
        declined = call("hello again")
        sim.clear_faults()
        image = [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]
        lacking = call(image)
        sim.fault(content_filter="output", match="m-primary")
        refused = call("something the filter dislikes")
        sim.clear_faults()
        sim.fault(status=400, error_code="unsupported_parameter", match="m-primary")  # a 4xx decline
        unsupported = call("hello with a parameter the primary lacks")
        sim.fault(status=400, match="m-primary")  # any other 4xx is the client's: no failover, nothing billed
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="g", messages=[{"role": "user", "content": "a bad request"}])
        sim.clear_faults()
        answered = (served, declined, lacking, refused, unsupported)
        assert [d for _, d in answered] == ["p", "s", "s", "s", "s"]
        ids = {rid for rid, _ in answered} | {f"{refused[0]}.1"}
        contracts = ("primary-commit", "secondary-commit", "rs-both")
        # A billed refusal's accrual to the primary's commitment can land after the revenue share's: wait for both.
        ledger = until(
            lambda: (
                (a := _accruals(db_url, *contracts))
                and set(a["rs-both"]) == ids
                and set(a["primary-commit"]) | set(a["secondary-commit"]) == ids
                and a
            ),
            what="every answer's accruals",
        )
    finally:
        gw.stop()

    primary, secondary, share = ledger["primary-commit"], ledger["secondary-commit"], ledger["rs-both"]
    assert set(primary) == {served[0], f"{refused[0]}.1"}  # what the primary answered, served or billed
    assert set(secondary) == {declined[0], lacking[0], refused[0], unsupported[0]}
    for rid, (basis, amount) in {**primary, **secondary}.items():
        assert basis == amount > 0 and share[rid] == (basis, basis * RATE), rid  # the same cost, x 0.175


def _usage_costs(db_url: str) -> dict[str, tuple[Decimal, str]]:
    """request id -> (cost, price version) of the stored usage rows."""

    async def read():
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                found = await conn.execute(
                    sa.select(usage_calls.c.request_id, usage_calls.c.cost, usage_calls.c.price_version)
                )
                return {r.request_id: (Decimal(r.cost), r.price_version) for r in found}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_a_price_change_mid_agreement_accrues_each_call_at_its_own_price(db_url, tmp_path, simulator):
    """A config reload changes the deployment's price half-way through an agreement: the calls before accrue
    at the old price and the calls after at the new one, each accrual carrying its usage row's cost and price
    version; nothing already accrued is rewritten."""
    sim = simulator("openai", "oa")

    def cfg(per_m_in: float, per_m_out: float) -> dict:
        return single(
            simulated("openai", sim.url),
            names=("oa", "d", "gpt-4o"),
            deployment_fields={"price": price(per_m_in, per_m_out)},
            storage=database_env(),
            identity=identity("MH_TEST_ADMIN"),
            server=api_keys("MH_TEST_CLIENT"),
            contracts={
                "flush_interval_s": 0.02,
                "revenue_share": [{"id": "rs-money", "rate": str(RATE), "basis": {"providers": ["oa"]}, **TERM}],
            },
        )

    env = {"MH_TEST_DB": db_url, "MH_TEST_ADMIN": ADMIN, "MH_TEST_CLIENT": "client-key"}
    gw = Gateway(cfg(0.15, 0.6), tmp_path, env)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=30)

        def call() -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "the same question"}]
            )
            return raw.headers["x-request-id"]

        before = [call() for _ in range(3)]
        path = Path(gw.args[gw.args.index("--config") + 1])
        path.write_text(yaml_text(cfg(2.5, 10)))
        admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
        reloaded = admin.post("/admin/v1/config/reload")
        assert reloaded.status_code == 200 and reloaded.json()["changed"], reloaded.text
        after = [call() for _ in range(3)]
        rows = until(
            lambda: (a := _accruals(db_url, "rs-money")["rs-money"]) and len(a) == 6 and a,
            what="six accruals",
        )
        usage = until(lambda: (u := _usage_costs(db_url)) and set(before + after) <= set(u) and u, what="usage rows")
    finally:
        gw.stop()

    versions = {usage[r][1] for r in before}, {usage[r][1] for r in after}
    assert len(versions[0]) == len(versions[1]) == 1 and versions[0] != versions[1]  # one version each side
    old, new = usage[before[0]][0], usage[after[0]][0]
    assert new > old > 0 and all(usage[r][0] == old for r in before) and all(usage[r][0] == new for r in after)
    for r in before + after:
        assert rows[r] == (usage[r][0], usage[r][0] * RATE), r  # accrued at the call's own price, exactly
    total, accruals = _ledger(db_url)
    assert total.accrued == 3 * old * RATE + 3 * new * RATE
    assert {a.request_id: a.price_version for a in accruals} == {r: usage[r][1] for r in before + after}
