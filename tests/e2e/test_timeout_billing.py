"""An attempt the gateway timed out itself (the group's `first_byte_s`) after its request was sent was read by
its provider, which bills the prompt: it is charged the prompt's estimate at that deployment's prices as an
`unserved` row of its own (`<request id>.<n>`, 499), on the key's budget, whether the
next deployment serves the call or nothing does (docs/metering.md). Through the running gateway, with the
official openai SDK, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from builders import api_keys, config, database, deployment, group, identity, key_budget, price, simulated
from multihome.metering.tables import usage_calls
from multihome.storage.engine import create_engine

from .helpers import until
from .processes import Gateway, key_budget_spent

CLIENT_KEY, ADMIN_KEY = "mh-timeout-billing-client", "mh-timeout-billing-admin"
SECRETS = {"MH_TB_CLIENT": CLIENT_KEY, "MH_TB_ADMIN": ADMIN_KEY}
KEY_ID = "env:MH_TB_CLIENT"
SLOW_MS = 4_000  # past the group's first_byte_s of 1 s


@pytest.fixture
def world(db_url, simulator, tmp_path: Path) -> Iterator[tuple[Gateway, object, str]]:
    sim = simulator("openai", "timeouts")
    cfg = config(
        server=api_keys("MH_TB_CLIENT"),
        identity=identity("MH_TB_ADMIN"),
        storage=database(db_url),
        metering={"budgets": [key_budget("MH_TB_CLIENT", "100")]},
        providers={"up": simulated("openai", sim.url)},
        deployments={
            "slow": deployment("up", "m-slow", price=price(1000, 2000)),
            "fast": deployment("up", "m-fast", price=price(1, 10)),
        },
        model_groups={"g": group("slow", "fast", retries=0, timeouts={"connect_s": 0.5, "first_byte_s": 1})},
    )
    gw = Gateway(cfg, tmp_path, SECRETS)
    try:
        yield gw, sim, db_url
    finally:
        log = gw.stop()
        assert "Traceback" not in log, log[-3000:]


async def _rows(db_url: str) -> dict[str, tuple]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            u = usage_calls.c
            q = sa.select(
                u.request_id, u.deployment, u.outcome, u.status, u.prompt_tokens, u.completion_tokens,
                u.estimated, u.cost_nanos,
            )  # fmt: skip
            return {row[0]: tuple(row[1:]) for row in (await conn.execute(q)).all()}
    finally:
        await engine.dispose()


def _spent(gw: Gateway) -> Decimal:
    return key_budget_spent(gw, ADMIN_KEY, KEY_ID)


def _check_timed_out_row(row: tuple) -> int:
    deployment, outcome, status, prompt, completion, estimated, nanos = row
    assert (deployment, outcome, status) == ("slow", "unserved", 499)
    assert prompt > 0 and completion == 0 and estimated
    assert nanos == prompt * 1000 * 1000  # 1,000 per million prompt tokens: the slow deployment's price
    return nanos


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_an_attempt_timed_out_after_its_request_was_sent_is_charged_its_prompt(world, stream):
    gw, sim, db_url = world
    sim.fault(latency_ms=SLOW_MS, match="m-slow")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="g", messages=[{"role": "user", "content": "a prompt the slow deployment read " * 20}], stream=stream
    )
    if stream:
        assert [chunk for chunk in raw.parse()]  # read to its end
    assert raw.headers["x-multihome-deployment"] == "fast"
    assert raw.headers["x-multihome-attempts"].startswith("slow;outcome=timeout")
    request_id = raw.headers["x-request-id"]
    rows = until(lambda: (r := asyncio.run(_rows(db_url))) and len(r) == 2 and r, what="the call's two usage rows")
    assert rows[request_id][:3] == ("fast", "ok", 200)
    nanos = _check_timed_out_row(rows[f"{request_id}.1"])
    served = rows[request_id][-1]
    total = Decimal(nanos + served) / 10**9
    until(lambda: _spent(gw) == total, what=f"the key's budget to hold the timed-out prompt too ({total})")

    admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    by_dep = {
        r["deployment"]: r for r in admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
    }
    assert Decimal(by_dep["slow"]["cost"]) == Decimal(nanos) / 10**9


def test_a_timed_out_attempt_is_charged_when_nothing_serves_the_call(world):
    gw, sim, db_url = world
    sim.fault(latency_ms=SLOW_MS, match="m-slow")
    sim.fault(status=503, match="m-fast")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="g", messages=[{"role": "user", "content": "nobody answers this"}])
    rows = until(lambda: (r := asyncio.run(_rows(db_url))) and len(r) == 2 and r, what="the call's two usage rows")
    [own] = [rid for rid in rows if "." not in rid]
    assert rows[own][1:3] == ("declined", 503)
    nanos = _check_timed_out_row(rows[f"{own}.1"])
    until(lambda: _spent(gw) == Decimal(nanos) / 10**9, what="the key's budget to hold the timed-out prompt")
