"""Budgets and rate limits shared by two gateway processes through one real Redis.

200 concurrent calls through both replicas (the official openai SDK): a hard budget is never
exceeded (reservations make the documented overshoot bound zero when the reservation covers the
call, which it does here), and a per-deployment rate limit lets exactly its limit through.
A per-deployment limit also steers routing: a deployment over its own limit is passed over.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import openai
import pytest

from builders import api_keys, config, database_env, deployment, group, identity, key_budget, price, simulated

from .conftest import CLIENT_KEY
from .helpers import in_one_minute
from .processes import Gateway
from .services import RedisServer, replicas
from .stores import head_database

ADMIN_KEY = "mh-bootstrap-admin-key-for-limits"
USER = [{"role": "user", "content": "hello"}]
IN, OUT = Decimal(1000), Decimal(2000)  # per 1M tokens: expensive, so a few calls use up the budget
BUDGET = Decimal("1.00")
RPM = 37
# Two rate-limited deployments, each with a counter of its own: a run that straddled a minute is done
# again on the second (helpers.in_one_minute), with no wait for a minute's start.
LIMITED = ("limited", "limited-b")
N_KEY = "mh-test-key-with-its-own-budget-for-n"


def _config(sim: str) -> dict:
    """A priced group under a hard budget per client key, a limited group under a per-deployment rate limit."""
    return config(
        server=api_keys("MH_TEST_CLIENT_KEY", "MH_TEST_N_KEY"),
        storage=database_env(),
        identity=identity("MH_TEST_ADMIN_KEY"),
        metering={
            "redis_url_env": "MH_TEST_REDIS_URL",
            "budgets": [key_budget("MH_TEST_CLIENT_KEY", BUDGET), key_budget("MH_TEST_N_KEY", BUDGET)],
            "rate_limits": [{"scope": "deployment", "id": name, "requests_per_minute": RPM} for name in LIMITED],
        },
        providers={"p": simulated("openai", sim)},
        deployments={
            "priced": deployment("p", "priced", price=price(IN, OUT)),
            **{name: deployment("p", name) for name in LIMITED},
        },
        model_groups={"priced": group("priced", retries=0), **{name: group(name, retries=0) for name in LIMITED}},
    )


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    env = {"MH_TEST_CLIENT_KEY": CLIENT_KEY, "MH_TEST_ADMIN_KEY": ADMIN_KEY, "MH_TEST_N_KEY": N_KEY}
    tmp = tmp_path_factory.mktemp("limits")
    with replicas(
        tmp,
        head_database(request, "sqlite", tmp),
        _config,
        env,
    ) as gateways:
        yield gateways


async def _burst(gateways, model: str, calls: int, key: str = CLIENT_KEY, **extra) -> list:
    clients = [
        openai.AsyncOpenAI(
            base_url=g.url + "/v1",
            api_key=key,
            max_retries=0,
            timeout=30,
            http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=calls)),
        )
        for g in gateways
    ]

    async def one(i):
        try:
            return await clients[i % 2].chat.completions.with_raw_response.create(model=model, messages=USER, **extra)
        except openai.APIStatusError as exc:
            return exc

    try:
        return await asyncio.gather(*(one(i) for i in range(calls)))
    finally:
        for c in clients:
            await c.close()


def _cost(usage) -> Decimal:
    return (usage.prompt_tokens * IN + usage.completion_tokens * OUT) / 1_000_000


def test_budget_is_never_exceeded_by_200_concurrent_calls_on_two_replicas(world):
    results = asyncio.run(_burst(world, "priced", 200, max_tokens=20))
    ok = [r.parse() for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert ok and refused, "the burst should both spend and hit the budget"
    assert all(r.status_code == 429 and r.body["code"] == "budget_exceeded" for r in refused), refused[0].body
    # Use up the rest one call at a time, through each replica in turn, until both refuse in a row
    # (bounded): a replica can be refused while the other holds an unused lease of the budget
    # (docs/metering.md "Leases"), which that one uses, or gives back when it goes to Redis.
    clients = [openai.OpenAI(base_url=g.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10) for g in world[:2]]
    refusals_in_a_row = 0
    for i in range(200):
        try:
            ok.append(clients[i % 2].chat.completions.create(model="priced", messages=USER, max_tokens=20))
            refusals_in_a_row = 0
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "budget_exceeded"
            refusals_in_a_row += 1
            if refusals_in_a_row == 2:
                break
    else:
        pytest.fail("the budget never refused a call on both replicas")
    spent = sum((_cost(r.usage) for r in ok), Decimal(0))  # what the provider would bill
    worst = max(_cost(r.usage) for r in ok)
    assert spent <= BUDGET, f"spent {spent} > budget {BUDGET}"
    # A refusal means the next reservation did not fit, so at most one call's reservation was left.
    reservation = ((1 * 5 // 4 + 16 + 100) * IN + 20 * OUT) / 1_000_000  # generous upper bound of one reservation
    assert spent >= BUDGET - reservation - worst
    # The admin API's usage summary (shared database) agrees with the provider's numbers exactly.
    admin = httpx.Client(base_url=world[1].url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    deadline = time.monotonic() + 60
    while True:
        summary = admin.get("/admin/v1/tenants/default/usage", params={"group_by": "deployment"}).json()
        row = [d for d in summary["data"] if d["deployment"] == "priced"]
        if (row and Decimal(row[0]["cost"]) == spent) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert Decimal(row[0]["cost"]) == spent and row[0]["calls"] >= len(ok)


def test_budget_reserves_for_every_choice_when_n_is_above_one(world):
    """n=8 generates eight answers of up to max_tokens each: the reservation covers all eight, so a
    burst of such calls cannot spend past the budget (it reserved for one and spent 377 %)."""
    results = asyncio.run(_burst(world, "priced", 40, key=N_KEY, max_tokens=20, n=8))
    ok = [r.parse() for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert ok and refused and all(r.body["code"] == "budget_exceeded" for r in refused), refused[:1]
    assert all(len(r.choices) == 8 for r in ok)
    client = openai.OpenAI(base_url=world[0].url + "/v1", api_key=N_KEY, max_retries=0, timeout=10)
    for _ in range(20):  # use up what the burst's reservations held back, one call at a time
        try:
            ok.append(client.chat.completions.create(model="priced", messages=USER, max_tokens=20, n=8))
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "budget_exceeded"
            break
    else:
        pytest.fail("the budget never refused a call")
    spent = sum((_cost(r.usage) for r in ok), Decimal(0))
    assert spent <= BUDGET, f"{len(ok)} calls with n=8 spent {spent} > budget {BUDGET}"


def test_rate_limit_lets_exactly_the_limit_through_two_replicas(world):
    results = in_one_minute(lambda name: asyncio.run(_burst(world, name, 200)), LIMITED)
    ok = [r for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(ok) == RPM and len(refused) == 200 - RPM
    for r in refused:
        assert r.status_code == 429 and r.body["code"] == "rate_limit_exceeded"
        retry = int(r.response.headers["retry-after"])
        assert 1 <= retry <= 60 and int(r.response.headers["retry-after-ms"]) <= 60_000
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
    assert remaining == list(range(RPM))
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {str(RPM)}
    assert all(r.headers["x-ratelimit-reset-requests"].endswith("s") for r in ok)


def _use_up_budget(gateways, key: str = CLIENT_KEY, **extra) -> list:
    """Calls one at a time through the replicas in turn until the budget refuses, also once the
    last call's settlement has reached the counters (until then its reservation may be what did
    not fit); the answers."""
    clients = [openai.OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0, timeout=10) for g in gateways]
    ok, refused = [], 0
    for i in range(100):
        try:
            ok.append(clients[i % len(clients)].chat.completions.create(model="priced", messages=USER, **extra))
            refused = 0
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "budget_exceeded", exc.body
            if refused:
                return ok
            refused = 1
            time.sleep(0.2)  # settlements reach Redis within 20 ms
    pytest.fail("the budget never refused a call")


def _stored_usage(gateway, deployment: str, until) -> dict:
    """The shared database's usage of one deployment, once `until(row)` holds (polled, bounded)."""
    admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    deadline = time.monotonic() + 60
    while True:
        data = admin.get("/admin/v1/tenants/default/usage", params={"group_by": "deployment"}).json()["data"]
        row = next((d for d in data if d["deployment"] == deployment), {"calls": 0, "cost": "0"})
        if until(row) or time.monotonic() > deadline:
            return row
        time.sleep(0.1)


def test_an_empty_redis_keeps_the_periods_spend_and_the_minutes_requests(tmp_path, sqlite_database):
    """Use up a key's budget and a deployment's requests of this minute through two replicas, then
    restart Redis empty: the replicas re-seed the counters from the stored usage rows, so nothing
    more is admitted (before: spend went from 1.00 to 1.61, and 74 calls passed a limit of 37)."""
    redis = [RedisServer()]  # replaced by its empty restart
    env = {"MH_TEST_CLIENT_KEY": CLIENT_KEY, "MH_TEST_ADMIN_KEY": ADMIN_KEY, "MH_TEST_N_KEY": N_KEY}
    try:
        with replicas(tmp_path, sqlite_database(), _config, env, redis=redis[0]) as gateways:
            spent = sum((_cost(r.usage) for r in _use_up_budget(gateways, max_tokens=20)), Decimal(0))
            assert spent <= BUDGET
            assert (
                Decimal(_stored_usage(gateways[1], "priced", lambda row: Decimal(row["cost"]) == spent)["cost"])
                == spent
            )

            def attempt(name: str) -> tuple[int, dict, list, list]:
                """A minute's requests used up, Redis restarted empty, then calls of both kinds."""
                limited = asyncio.run(_burst(gateways, name, 60))
                admitted = len([r for r in limited if not isinstance(r, openai.APIStatusError)])
                # Both replicas' usage rows are in the database (each flushes within 50 ms).
                stored = _stored_usage(gateways[1], name, lambda row: row["calls"] == admitted)
                redis[0].stop()
                redis[0] = RedisServer(port=redis[0].port)  # back, empty
                priced = asyncio.run(_burst(gateways, "priced", 10, max_tokens=20))
                return admitted, stored, priced, asyncio.run(_burst(gateways, name, 10))

            admitted, stored, priced, after = in_one_minute(attempt, LIMITED)
            assert admitted == RPM and stored["calls"] == RPM
            assert all(isinstance(r, openai.APIStatusError) and r.body["code"] == "budget_exceeded" for r in priced), [
                getattr(r, "body", "admitted") for r in priced
            ]
            assert all(
                isinstance(r, openai.APIStatusError) and r.body["code"] == "rate_limit_exceeded" for r in after
            ), [getattr(r, "body", "admitted") for r in after]
    finally:
        redis[0].stop()


def test_a_deployment_over_its_own_rate_limit_is_passed_over(tmp_path, simulator):
    """A per-deployment limit steers routing: the next call goes to the next deployment, and says why."""
    a, b = simulator("openai", "a"), simulator("openai", "b")
    primaries = {"limited": "primary", "limited-b": "primary-b"}  # group -> its limited primary (LIMITED)
    cfg = config(
        server=api_keys("MH_TEST_CLIENT"),
        metering={
            "rate_limits": [{"scope": "deployment", "id": p, "requests_per_minute": 1} for p in primaries.values()]
        },
        providers={"pa": simulated("openai", a.url), "pb": simulated("openai", b.url)},
        deployments={
            **{p: deployment("pa", "p") for p in primaries.values()},
            "secondary": deployment("pb", "s"),
        },
        model_groups={g: group(p, "secondary") for g, p in primaries.items()},
    )
    gw = Gateway(cfg, tmp_path, {"MH_TEST_CLIENT": "client"})
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client", max_retries=0)

        def two_calls(name: str) -> tuple:
            return tuple(
                client.chat.completions.with_raw_response.create(
                    model=name, messages=[{"role": "user", "content": "hi"}]
                )
                for _ in range(2)
            )

        first, second = in_one_minute(two_calls, list(primaries))
    finally:
        gw.stop()
    assert first.headers["x-multihome-deployment"] in primaries.values()
    assert second.headers["x-multihome-deployment"] == "secondary"
    assert (
        f'{first.headers["x-multihome-deployment"]};outcome=skipped;reason="deployment rate limit reached"'
        in (second.headers["x-multihome-attempts"])
    )
