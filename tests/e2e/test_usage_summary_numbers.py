"""docs/metering.md "Admin API": the usage summary counts calls (the requests clients made), errors
(denied, declined, failed or cancelled), tokens and cost per group; checked against what the official
openai SDK was answered (its `usage`) and the price, and against a budget refusal and a failed call."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import openai
import pytest

from builders import (
    NOWHERE,
    api_keys,
    config,
    deployment,
    group,
    identity,
    key_budget,
    price,
    provider,
    simulated,
    sqlite,
)

from .processes import Gateway, Simulator

SECRETS = {
    "MH_US_CLIENT": "mh-usage-summary-client",
    "MH_US_SPENT": "mh-usage-summary-spent",
    "MH_US_ADMIN": "mh-usage-summary-admin",
}
IN, OUT = Decimal(3), Decimal(7)  # per 1M tokens
HI = [{"role": "user", "content": "count these tokens please"}]


def _summary(gw: Gateway, path: str, group_by: str, until) -> dict:
    admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {SECRETS['MH_US_ADMIN']}"}, timeout=10)
    deadline, rows = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        answer = admin.get(path, params={"group_by": group_by})
        assert answer.status_code == 200, answer.text
        rows = {r[group_by]: r for r in answer.json()["data"]}
        if until(rows):
            break
        time.sleep(0.2)
    return rows


def test_the_usage_summary_adds_up_what_clients_were_answered_and_refused(tmp_path):
    sim = Simulator("openai", "usage-summary")
    gw = None
    try:
        gw = Gateway(
            config(
                server=api_keys("MH_US_CLIENT", "MH_US_SPENT"),
                storage=sqlite(tmp_path / "mh.db"),
                identity=identity("MH_US_ADMIN"),
                metering={"budgets": [key_budget("MH_US_SPENT", "0.0000001", period="total")]},
                providers={"oa": simulated("openai", sim.url), "gone": provider("openai", NOWHERE)},
                deployments={
                    "oa": deployment("oa", "gpt-u", price=price(IN, OUT)),
                    "gone": deployment("gone", "gpt-u", price=price(IN, OUT)),
                },
                model_groups={
                    "gpt": group("oa", retries=0),
                    "spent": group("oa", retries=0),
                    "down": group("gone", retries=0),
                },
            ),
            tmp_path,
            SECRETS,
        )
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=SECRETS["MH_US_CLIENT"], max_retries=0, timeout=30)
        answered = [client.chat.completions.create(model="gpt", messages=HI, max_tokens=20) for _ in range(3)]
        with pytest.raises(openai.RateLimitError):
            client.with_options(api_key=SECRETS["MH_US_SPENT"]).chat.completions.create(model="spent", messages=HI)
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="down", messages=HI)
        assert failed.value.status_code >= 500

        prompt = sum(a.usage.prompt_tokens for a in answered)
        completion = sum(a.usage.completion_tokens for a in answered)
        cost = (prompt * IN + completion * OUT) / 1_000_000
        rows = _summary(
            gw,
            "/admin/v1/tenants/default/usage",
            "model_group",
            lambda rows: rows.keys() >= {"gpt", "spent", "down"} and rows["gpt"]["calls"] == 3,
        )
        gpt, spent, down = rows["gpt"], rows["spent"], rows["down"]
        assert (gpt["calls"], gpt["errors"], gpt["unserved"]) == (3, 0, 0), gpt
        assert (gpt["prompt_tokens"], gpt["completion_tokens"]) == (prompt, completion), gpt
        assert Decimal(gpt["cost"]) == cost and gpt["currency"] == "USD", (gpt, cost)
        assert (spent["calls"], spent["errors"], Decimal(spent["cost"])) == (1, 1, 0), spent
        assert (down["calls"], down["errors"], Decimal(down["cost"])) == (1, 1, 0), down

        tenants = _summary(gw, "/admin/v1/usage", "tenant", lambda rows: bool(rows))
        (everyone,) = tenants.values()
        assert (everyone["calls"], everyone["errors"], Decimal(everyone["cost"])) == (5, 2, cost), everyone
    finally:
        log = gw.stop() if gw is not None else ""
        sim.stop()
        assert "Traceback" not in log, log[-3000:]
