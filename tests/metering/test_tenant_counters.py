"""Team and key counters are the tenant's own: a team or subject name is free text each tenant's identity
provider picks, so two tenants with a team `ml` (or a subject `alice` without a key id) must not share a
budget or a rate limit. Through the Limiter on in-process and Redis counters (the usual admission and
the general one), the seed from stored usage, and the real request path with OIDC tokens of two tenants."""

from __future__ import annotations

import time
import uuid

import httpx
import msgspec
import pytest

from admin_http import running
from builders import config, deployment, group, identity, price, simulated
from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.rules import AdminBudget, Rules
from multihome.metering.service import Metering
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal
from multihome.simulators import SimulatorConfig, start_simulator
from oidc_issuer import LocalIssuer

from .conftest import Dep, call
from .test_limiter import _now_is_near_real_time, counters_factory, limiter  # noqa: F401  # its fixtures

pytestmark = pytest.mark.anyio
# dep-b's prices in test_limiter: 1000 prompt + 500 output tokens reserve 0.005798 USD, so a budget of
# 0.0100 holds one such call in flight, not two.
PLAN = [Dep("dep-b")]


def oidc(tenant: str, team: str | None = "ml", sub: str = "alice") -> Principal:
    """A caller as an OIDC token makes it: a team and a subject its tenant's identity provider chose, no key id."""
    return Principal(tenant=tenant, subject=sub, source="oidc:corp", team=team)


async def _refused(lim, who: Principal, rid: str) -> str:
    with pytest.raises(ApiError) as refused:
        await lim.admit(who, "g", PLAN, 1000, 500, rid)
    assert refused.value.status == 429
    return refused.value.body.code


@pytest.mark.parametrize("scope", ["team", "key"])
async def test_a_tenant_cannot_spend_another_tenants_team_or_key_budget(counters_factory, scope):  # noqa: F811
    lim = await limiter(
        counters_factory,
        budgets=[BudgetRule(scope=scope, id="*", amount="0.0100", period="day")],
        # with one hard budget, requests and tokens per minute: the usual shape (its own admission in process)
        rate_limits=[RateLimitRule(scope=scope, id="*", requests_per_minute=100, tokens_per_minute=1_000_000)],
    )
    acme = await lim.admit(oidc("acme"), "g", PLAN, 1000, 500, "acme-1")
    if not lim.counters.shared:
        (shape,) = lim._shapes.values()
        assert shape.usual is not None
    assert await _refused(lim, oidc("acme"), "acme-2") == "budget_exceeded"
    # globex's team ml (and its alice) has its own budget, untouched by acme's spend
    globex = await lim.admit(oidc("globex"), "g", PLAN, 1000, 500, "globex-1")
    assert await _refused(lim, oidc("globex"), "globex-2") == "budget_exceeded"
    # settled to what they cost, each counter holds its own tenant's call only
    for rid in ("acme-1", "globex-1"):
        lim.settle(rid, 1_000_000, "USD", 1500)
    await lim.drain()
    keys = [acme.reserved[0][0], globex.reserved[0][0]]
    assert keys[0] != keys[1] and await lim.counters.read(keys, int(lim.clock() * 1000)) == [1_000_000] * 2
    await lim.close()


@pytest.mark.parametrize("scope", ["team", "key"])
async def test_a_tenant_cannot_use_up_another_tenants_team_or_key_rate_limit(counters_factory, scope):  # noqa: F811
    lim = await limiter(counters_factory, rate_limits=[RateLimitRule(scope=scope, id="*", requests_per_minute=1)])
    await lim.admit(oidc("acme"), "g", PLAN, 10, 10, "acme-1")
    assert await _refused(lim, oidc("acme"), "acme-2") == "rate_limit_exceeded"
    await lim.admit(oidc("globex"), "g", PLAN, 10, 10, "globex-1")
    assert await _refused(lim, oidc("globex"), "globex-2") == "rate_limit_exceeded"
    await lim.close()


async def test_a_rule_naming_a_team_applies_to_that_team_of_each_tenant_separately(counters_factory):  # noqa: F811
    lim = await limiter(counters_factory, budgets=[BudgetRule(scope="team", id="ml", amount="0.0100", period="day")])
    for tenant in ("acme", "globex"):
        await lim.admit(oidc(tenant), "g", PLAN, 1000, 500, f"{tenant}-1")
        assert await _refused(lim, oidc(tenant), f"{tenant}-2") == "budget_exceeded"
    await lim.admit(oidc("acme", team="other"), "g", PLAN, 1000, 500, "acme-other")  # no rule for it
    await lim.admit(oidc("acme", team="other"), "g", PLAN, 1000, 500, "acme-other-2")
    await lim.close()


async def test_a_budget_set_through_the_admin_api_binds_its_own_tenant_only(counters_factory):  # noqa: F811
    lim = await limiter(counters_factory)
    acme_ml = AdminBudget(scope="team", id="ml", amount="0.0100", period="day", budget_id="bud_1", tenant_id="acme")
    lim.use_rules(Rules(MeteringConfig(key_prefix=lim.cfg.key_prefix), [acme_ml]))
    await lim.admit(oidc("acme"), "g", PLAN, 1000, 500, "acme-1")
    assert await _refused(lim, oidc("acme"), "acme-2") == "budget_exceeded"
    for i in range(3):  # globex's team ml has no budget at all
        ticket = await lim.admit(oidc("globex"), "g", PLAN, 1000, 500, f"globex-{i}")
        assert ticket.reserved == []
    await lim.close()


@pytest.mark.parametrize("shared", [False, True], ids=["local", "redis"])
async def test_the_seed_from_stored_usage_keeps_each_tenants_spend_apart(db_url, shared, request):
    """A fresh process (or new counter keys in Redis, as after an upgrade) seeds team and key counters per
    tenant: acme's stored spend and requests bind acme's team ml and alice, not globex's."""
    now = (time.time() // 60) * 60 + 1  # one second into this minute: one rate window throughout
    prices = PriceTable({"dep-b": DeploymentPrice.of(3.0, 4.0, None, "USD")})
    cfg = MeteringConfig(
        key_prefix=f"t{uuid.uuid4().hex[:8]}:",
        budgets=[BudgetRule(scope="team", id="*", amount="0.0100", period="day")],
        rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1)],
    )
    server = request.getfixturevalue("redis_server") if shared else None

    async def started() -> Metering:
        counters = RedisCounters(server.url, prefix=cfg.key_prefix) if server is not None else None
        m = Metering(cfg, prices, storage_url=db_url, clock=lambda: now, counters=counters)
        await m.start()
        return m

    first = await started()
    await first.limiter.admit(oidc("acme"), "g", PLAN, 10, 10, "spent")
    # 1000 prompt + 2000 completion tokens at 3 / 4 per 1M: 0.011, past acme's team ml budget
    record = call("spent", "dep-b", prompt=1000, completion=2000, tenant="acme", team="ml", key_id=None, started=now)
    first.record(msgspec.structs.replace(record, subject="alice"))
    await first.close()
    cfg = msgspec.structs.replace(cfg, key_prefix=f"t{uuid.uuid4().hex[:8]}:")  # counter keys that do not exist
    again = await started()
    assert await _refused(again.limiter, oidc("acme"), "acme-again") in ("budget_exceeded", "rate_limit_exceeded")
    assert await _refused(again.limiter, oidc("acme", team=None), "acme-key") == "rate_limit_exceeded"
    assert await _refused(again.limiter, oidc("acme", sub="bob"), "acme-team") == "budget_exceeded"
    await again.limiter.admit(oidc("globex"), "g", PLAN, 10, 10, "globex-1")  # globex's ml and alice: nothing spent
    await again.close()


@pytest.fixture
async def gateway():
    """The app in process, trusting a local OIDC issuer whose tokens carry a tenant, a team and a subject."""
    sim = await start_simulator(SimulatorConfig(kind="openai", name="tenants"))
    with LocalIssuer() as idp:
        corp = idp.config_dict(
            name="corp", algorithms=None, claims={"tenant": "tid", "team": "team", "default_roles": ["member"]}
        )
        cfg = config(
            identity=identity(None, corp),
            metering={"rate_limits": [{"scope": "team", "id": "*", "requests_per_minute": 1}]},
            providers={"p": simulated("openai", sim.url)},
            deployments={"d": deployment("p", "m", price=price(3, 15))},
            model_groups={"g": group("d", retries=0)},
        )
        try:
            async with running(cfg) as app:
                yield app, idp
        finally:
            await sim.close()


async def test_on_the_request_path_two_tenants_teams_of_one_name_are_two_teams(gateway):
    app, idp = gateway
    body = {"model": "g", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:

        async def chat(tenant: str) -> httpx.Response:
            token = idp.mint(tid=tenant, team="ml", sub="alice")
            return await http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {token}"})

        first = await chat("acme")
        assert first.status_code == 200, first.text
        again = await chat("acme")
        assert again.status_code == 429 and again.json()["error"]["code"] == "rate_limit_exceeded"
        other = await chat("globex")  # acme's team ml used its minute's request; globex's has its own
        assert other.status_code == 200, other.text
        assert other.headers["x-ratelimit-remaining-requests"] == "0"


async def test_usage_across_the_organisation_keeps_each_tenants_team_apart(db_url):
    from multihome.metering.summary import usage_summary

    prices = PriceTable({"dep-b": DeploymentPrice.of(3.0, 4.0, None, "USD")})
    m = Metering(MeteringConfig(), prices, storage_url=db_url)
    await m.start()
    for i, (tenant, prompt) in enumerate((("acme", 1000), ("acme", 1000), ("globex", 3000))):
        m.record(call(f"r{i}", "dep-b", prompt=prompt, completion=0, tenant=tenant, team="ml", key_id=None))
    await m.flush()
    by_team = await usage_summary(m.engine, None, "team")
    assert [(e["tenant_id"], e["team"], e["calls"], e["cost"]) for e in by_team] == [
        ("acme", "ml", 2, "0.006"),
        ("globex", "ml", 1, "0.009"),
    ]
    [acme] = await usage_summary(m.engine, "acme", "team")  # within one tenant: as before, no tenant_id
    assert "tenant_id" not in acme and (acme["team"], acme["calls"]) == ("ml", 2)
    await m.close()


def test_no_tenant_and_id_spell_another_pairs_counter():
    rules = Rules(
        MeteringConfig(
            budgets=[BudgetRule(scope="team", id="*", amount="1")],
            rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=1)],
        )
    )
    pairs = [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("acme", "ml"), ("globex", "ml")]
    bases = {rules.budgets_for("team", team, tenant)[0].base for tenant, team in pairs}
    rates = {rules.rate_for("key", key, tenant).base for tenant, key in pairs}  # type: ignore[union-attr]
    assert len(bases) == len(rates) == len(pairs)
    assert rules.budgets_for("team", "ml", "acme")[0].base == "mh:b:team:acme:ml:month:USD:"
