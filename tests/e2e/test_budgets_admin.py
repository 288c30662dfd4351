"""Budgets managed through the admin API, end to end: two gateway processes sharing one database
and one Redis, the official openai SDK as the client.

A budget created through replica 1 refuses calls on replica 2 once spent (429 budget_exceeded);
raising it lets calls through again and keeps what was spent (total spend stays within the new
amount); lowering it refuses again; deleting it removes the limit. An auditor cannot write, and
bad bodies get 400s that name the field.
"""

from __future__ import annotations

import json
import subprocess
import time
from decimal import Decimal

import httpx
import openai
import pytest

from builders import database_env, identity, price, simulated, single

from .processes import VENV_BIN, Gateway
from .services import replicas
from .stores import head_database

ADMIN_KEY = "mh-bootstrap-admin-key-for-budgets"
USER = [{"role": "user", "content": "hello"}]
IN, OUT = Decimal(1000), Decimal(2000)  # per 1M tokens: expensive, so a few calls use up a budget


def config_for(sim: str) -> dict:
    return single(
        simulated("openai", sim),
        model="priced",
        names=("p", "priced", "priced"),
        deployment_fields={"price": price(IN, OUT)},
        group_fields={"retries": 0},
        storage=database_env(),
        identity=identity("MH_TEST_ADMIN_KEY"),
        metering={"redis_url_env": "MH_TEST_REDIS_URL"},
    )


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budgets")
    with replicas(
        tmp,
        head_database(request, "sqlite", tmp),
        config_for,
        {"MH_TEST_ADMIN_KEY": ADMIN_KEY},
    ) as gateways:
        yield gateways


def admin(gw: Gateway, key: str = ADMIN_KEY) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=10)


def ok(resp: httpx.Response, status: int = 200) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()


def cost(usage) -> Decimal:
    return (usage.prompt_tokens * IN + usage.completion_tokens * OUT) / 1_000_000


def spend_until_refused(client: openai.OpenAI, limit: int = 40) -> list:
    """Call until the budget refuses; the answered calls' usage. Fails if it never refuses."""
    answered = []
    for _ in range(limit):
        try:
            answered.append(client.chat.completions.create(model="priced", messages=USER, max_tokens=20).usage)
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "budget_exceeded" and exc.body["type"] == "insufficient_quota", exc.body
            assert "Ask your tenant admin to raise the budget" in exc.body["message"]
            return answered
    pytest.fail("the budget never refused a call")


def wait_for(gw_admin: httpx.Client, tenant: str, predicate, what: str) -> list:
    """Poll a replica's budget list until `predicate(entries)`: that replica's limiter enforces it."""
    deadline = time.monotonic() + 60
    while True:
        entries = ok(gw_admin.get(f"/admin/v1/tenants/{tenant}/budgets"))["data"]
        if predicate(entries):
            return entries
        assert time.monotonic() < deadline, f"replica never showed {what}: {entries}"
        time.sleep(0.05)


def test_budget_created_raised_lowered_and_deleted_through_the_admin_api(world):
    gw1, gw2 = world
    root1, root2 = admin(gw1), admin(gw2)
    tenant = ok(root1.post("/admin/v1/tenants", json={"name": "acme"}), 201)["id"]
    made = ok(root1.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "app"}), 201)
    key_id, secret = made["id"], made["key"]
    client = openai.OpenAI(base_url=gw2.url + "/v1", api_key=secret, max_retries=0, timeout=10)
    first = client.chat.completions.create(model="priced", messages=USER, max_tokens=20).usage  # before any budget

    url = f"/admin/v1/tenants/{tenant}/budgets"
    budget = ok(root1.post(url, json={"scope": "key", "scope_id": key_id, "amount": "0.20", "period": "day"}), 201)
    bid = budget["id"]
    assert (budget["amount"], budget["mode"], budget["source"]) == ("0.2", "hard", "admin")
    wait_for(root2, tenant, lambda es: [e["id"] for e in es] == [bid], "the new budget")

    # Spent on replica 2 until refused; the call made before the budget counts too (seeded).
    spent = [first, *spend_until_refused(client)]
    total = sum(map(cost, spent), Decimal(0))
    assert Decimal("0.10") < total <= Decimal("0.20"), total
    with pytest.raises(openai.RateLimitError):  # replica 1 shares the counter through Redis
        openai.OpenAI(base_url=gw1.url + "/v1", api_key=secret, max_retries=0).chat.completions.create(
            model="priced", messages=USER, max_tokens=20
        )
    [entry] = wait_for(root1, tenant, lambda es: Decimal(es[0]["spent_or_reserved"]) == total, "the spend settled")
    assert entry["source"] == "admin" and entry["in_force"] and Decimal(entry["remaining"]) == Decimal("0.2") - total

    # Raise it: calls pass again, and what was spent is kept (total stays within the new amount).
    raised = ok(root1.patch(f"{url}/{bid}", json={"amount": "0.40"}))
    assert raised["amount"] == "0.4" and raised["id"] == bid
    [entry] = wait_for(root2, tenant, lambda es: es[0]["amount"] == "0.4", "the raised amount")
    assert Decimal(entry["spent_or_reserved"]) == total
    more = spend_until_refused(client)
    assert more, "the raised budget should let calls through"
    total += sum(map(cost, more), Decimal(0))
    assert Decimal("0.25") < total <= Decimal("0.40"), f"spent {total}: the counter was reset by the change"

    # Lower it below what was spent, then remove it.
    ok(root1.patch(f"{url}/{bid}", json={"amount": "0.01"}))
    wait_for(root2, tenant, lambda es: es[0]["amount"] == "0.01", "the lowered amount")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="priced", messages=USER, max_tokens=20)
    assert ok(root1.delete(f"{url}/{bid}")) == {"id": bid, "object": "budget.deleted", "deleted": True}
    wait_for(root2, tenant, lambda es: es == [], "the deletion")
    for _ in range(3):  # over every amount this budget ever had, and nothing refuses
        client.chat.completions.create(model="priced", messages=USER, max_tokens=20)
    assert root2.get(f"{url}/{bid}").status_code == 404


def test_auditor_reads_but_cannot_write_and_bad_bodies_get_400(world):
    gw1, _ = world
    root = admin(gw1)
    tenant = ok(root.post("/admin/v1/tenants", json={"name": "globex"}), 201)["id"]
    auditor = admin(
        gw1, ok(root.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "aud", "roles": ["auditor"]}), 201)["key"]
    )
    url = f"/admin/v1/tenants/{tenant}/budgets"
    budget = ok(root.post(url, json={"scope": "tenant", "amount": 50}), 201)

    assert [e["id"] for e in ok(auditor.get(url))["data"]] == [budget["id"]]
    for resp in (
        auditor.post(url, json={"scope": "tenant", "amount": 1, "period": "day"}),
        auditor.patch(f"{url}/{budget['id']}", json={"amount": 1000}),
        auditor.delete(f"{url}/{budget['id']}"),
    ):
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "insufficient_role", resp.text
    assert ok(root.get(f"{url}/{budget['id']}"))["amount"] == "50"  # nothing changed

    for body, param in (
        ({"scope": "tenant", "amount": "-5"}, "amount"),
        ({"scope": "tenant", "amount": "ten"}, "amount"),
        ({"scope": "team", "amount": 1}, "scope_id"),
        ({"scope": "tenant", "amount": 1, "period": "year"}, "period"),
    ):
        resp = root.post(url, json=body)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
    resp = root.post(url, content=b"not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


def test_budgets_from_the_command_line(world):
    gw1, _ = world
    tenant = ok(admin(gw1).post("/admin/v1/tenants", json={"name": "initech"}), 201)["id"]

    def cli(*args: str) -> str:
        out = subprocess.run(
            [str(VENV_BIN / "multihome"), "budgets", *args, "--url", gw1.url, "--key", ADMIN_KEY],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    made = json.loads(cli("create", "--tenant", tenant, "--amount", "75.50", "--period", "day", "--json"))
    assert (made["scope"], made["scope_id"], made["amount"], made["period"]) == ("tenant", tenant, "75.5", "day")
    cli("update", "--tenant", tenant, made["id"], "--amount", "80", "--mode", "soft")
    header, row = cli("list", "--tenant", "initech").splitlines()  # by name: the CLI looks the id up
    assert header.split()[:5] == ["ID", "SCOPE", "APPLIES", "TO", "PERIOD"], header
    assert row.split("  ")[0] == made["id"]
    assert [c.strip() for c in row.split("  ") if c.strip()][1:] == [
        "tenant",
        f"{tenant} (initech)",
        "day",
        "soft",
        "USD 0.00",
        "USD 80.00",
        "0.0%",
        "USD 80.00",
        "org-admin",
    ], row
    cli("delete", "--tenant", tenant, made["id"])
    assert [line.split() for line in cli("list", "--tenant", tenant).splitlines()] == [header.split()]  # no rows
    refused = subprocess.run(
        [
            str(VENV_BIN / "multihome"),
            "budgets",
            "create",
            "--tenant",
            tenant,
            "--amount",
            "-1",
            "--url",
            gw1.url,
            "--key",
            ADMIN_KEY,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0 and "error 400" in refused.stderr
