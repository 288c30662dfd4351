"""An upstream answer the provider bills and the gateway does not serve is still the tenant's to pay:
the official openai SDK -> the real gateway (SQLite) -> a simulated OpenAI upstream whose first deployment
refuses with a 200 `finish_reason: content_filter` (usage and all). The group fails over on refusals, so
the client gets the second deployment's answer; the refused generation is metered too (its own usage row
at its own deployment's prices, the key's budget, the audit trail), or a tenant whose prompts trip the
filter would get every refused generation free."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from builders import api_keys, audit, config, database, deployment, group, identity, key_budget, price, simulated

from .helpers import until
from .processes import Gateway

CLIENT_KEY, ADMIN_KEY = "mh-billed-attempts-client", "mh-billed-attempts-admin"
SECRETS = {"MH_BA_CLIENT": CLIENT_KEY, "MH_BA_ADMIN": ADMIN_KEY}
KEY_ID = "env:MH_BA_CLIENT"


@pytest.fixture
def world(simulator, tmp_path: Path, sqlite_database) -> Iterator[tuple[Gateway, object]]:
    sim = simulator("openai", "upstream")
    cfg = config(
        server=api_keys("MH_BA_CLIENT"),
        identity=identity("MH_BA_ADMIN"),
        storage=database(sqlite_database()),  # at the head revision
        audit=audit(tmp_path / "audit"),
        metering={"budgets": [key_budget("MH_BA_CLIENT", "100")]},
        providers={"up": simulated("openai", sim.url)},
        deployments={
            "filtered": deployment("up", "m-filtered", price=price(3, 30)),
            "backup": deployment("up", "m-backup", price=price(1, 10)),
        },
        model_groups={
            "strict": group("filtered", "backup", fail_over_on=["capacity", "unavailable", "refusal"], retries=0)
        },
    )
    gw = Gateway(cfg, tmp_path, SECRETS)
    try:
        yield gw, sim
    finally:
        log = gw.stop()
        assert "Traceback" not in log, log[-3000:]


def _admin(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)


def _cost(prompt: int, completion: int, per_m_in: int, per_m_out: int) -> Decimal:
    return (Decimal(prompt) * per_m_in + Decimal(completion) * per_m_out) / 1_000_000


def test_a_refused_answer_failed_over_from_is_metered_budgeted_and_audited(world):
    gw, sim = world
    sim.fault(content_filter="output", match="m-filtered")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="strict", messages=[{"role": "user", "content": "Tell me something the filter dislikes"}]
    )
    reply = raw.parse()
    assert raw.headers["x-multihome-deployment"] == "backup" and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    request_id = raw.headers["x-request-id"]
    # The refusing upstream was asked once, and answered (it bills what it generated).
    assert [r["model"] for r in sim.requests()] == ["m-filtered", "m-backup"]

    admin = _admin(gw)

    def rows() -> dict[str, dict]:
        data = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
        return {row["deployment"]: row for row in data}

    by_dep = until(lambda: (r := rows()).get("filtered") and r.get("backup") and r, what="both usage rows")
    filtered, backup = by_dep["filtered"], by_dep["backup"]
    # The refused answer is no call of a client's: an unserved answer at its deployment, tokens and cost counted.
    assert (filtered["calls"], filtered["unserved"]) == (0, 1) and (backup["calls"], backup["unserved"]) == (1, 0)
    assert filtered["completion_tokens"] > 0 and filtered["prompt_tokens"] > 0
    assert Decimal(filtered["cost"]) == _cost(filtered["prompt_tokens"], filtered["completion_tokens"], 3, 30)
    assert Decimal(backup["cost"]) == _cost(reply.usage.prompt_tokens, reply.usage.completion_tokens, 1, 10)
    total = Decimal(filtered["cost"]) + Decimal(backup["cost"])

    def spent() -> Decimal:
        data = admin.get("/admin/v1/tenants/default/budgets", params={"key": KEY_ID}).json()["data"]
        [entry] = [e for e in data if e["scope"] == "key"]
        return Decimal(entry["spent_or_reserved"])

    until(lambda: spent() == total, what=f"the key's budget to hold both answers ({total})")

    events = until(
        lambda: admin.get("/admin/v1/audit/events", params={"outcome": "unserved"}).json()["data"],
        what="the refused answer's audit event",
    )
    [event] = events
    body = event.get("body", event)
    assert body["request_id"] == f"{request_id}.1" and body["deployment"] == "filtered"
    assert body["error_code"] == "content_filter" and body["tokens"]["completion"] > 0


def test_a_refused_answer_is_metered_when_no_deployment_serves_the_call(world):
    gw, sim = world
    sim.fault(content_filter="output", match="m-filtered")
    sim.fault(status=503, match="m-backup")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="strict", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    admin = _admin(gw)

    def filtered() -> dict | None:
        data = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
        return next((row for row in data if row["deployment"] == "filtered"), None)

    row = until(filtered, what="the refused answer's usage row")
    assert row["completion_tokens"] > 0 and Decimal(row["cost"]) > 0

    def spent() -> Decimal:
        data = admin.get("/admin/v1/tenants/default/budgets", params={"key": KEY_ID}).json()["data"]
        [entry] = [e for e in data if e["scope"] == "key"]
        return Decimal(entry["spent_or_reserved"])

    until(lambda: spent() == Decimal(row["cost"]), what="the key's budget to hold the refused answer")


def test_a_background_turn_is_streamed_so_a_refusal_is_its_answer_and_nothing_goes_unserved(world):
    # Background turns and agent steps are streamed upstream (runner.py, agent.py), and a stream does not
    # fail over on a refusal: the refusal is the turn's answer, charged as the call. So no unserved answer
    # can arise in them, which an agent run's max_spend (agent.py `_add_usage`) and a repeated job's dedup
    # (runner.py / agent.py: `billed`) rely on: if streams ever fail over on refusals, both must count them.
    import time

    gw, sim = world
    sim.fault(content_filter="output", match="m-filtered")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    response = client.responses.create(model="strict", input="Tell me something the filter dislikes", background=True)
    deadline = time.monotonic() + 60
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        response = client.responses.retrieve(response.id)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "content_filter"
    assert [(r["model"], r.get("stream")) for r in sim.requests()] == [("m-filtered", True)]
    admin = _admin(gw)
    rows = until(
        lambda: admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"],
        what="the turn's usage row",
    )
    assert [(r["deployment"], r["calls"]) for r in rows] == [("filtered", 1)]
    assert admin.get("/admin/v1/audit/events", params={"outcome": "unserved"}).json()["data"] == []
