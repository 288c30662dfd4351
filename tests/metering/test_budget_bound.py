"""In-process team and key budget counters are capped (metering/budget_bound.py): a tenant's identity
provider can mint any number of subjects, and a `"*"` `total` budget kept a counter per subject for ever.
A dropped counter is read back from the stored usage when its caller returns, so no budget is passed."""

from __future__ import annotations

import time
import uuid

import httpx
import msgspec
import pytest

from admin_http import running
from builders import identity, price, simulated, single, sqlite
from builders import oidc as trusting
from multihome.config.metering import BudgetRule, MeteringConfig, RateLimitRule
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.service import Metering
from multihome.schema.errors import ApiError
from multihome.schema.principal import Principal
from multihome.simulators import SimulatorConfig, start_simulator
from oidc_issuer import LocalIssuer

from .conftest import Dep, call

pytestmark = pytest.mark.anyio
PLAN = [Dep("dep-b")]
PRICES = PriceTable({"dep-b": DeploymentPrice.of(3.0, 4.0, None, "USD")})
CAP = 40


def oidc(sub: str) -> Principal:
    """A caller as an OIDC token makes it: a subject the tenant's identity provider chose, no key id."""
    return Principal(tenant="acme", subject=sub, source="oidc:corp")


class Clock:
    def __init__(self) -> None:
        self.now = (time.time() // 60) * 60 + 1

    def __call__(self) -> float:
        return self.now


async def _metering(db_url: str, clock: Clock, **cfg) -> Metering:
    m = Metering(MeteringConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:", **cfg), PRICES, storage_url=db_url, clock=clock)
    m.limiter.bound.cap = CAP
    await m.start()
    return m


def _kept(m: Metering) -> int:
    values, _ = m.limiter.counters.tables()
    return sum(1 for k in values if k.startswith(m.limiter.bound.prefixes))


async def _spend(m: Metering, sub: str, rid: str, clock: Clock, completion: int = 10) -> None:
    await m.limiter.admit(oidc(sub), "g", PLAN, 10, 10, rid)
    record = call(rid, "dep-b", prompt=10, completion=completion, tenant="acme", key_id=None, started=clock.now)
    m.record(msgspec.structs.replace(record, subject=sub))


@pytest.mark.parametrize("usual", [False, True], ids=["general", "usual"])
async def test_minted_subjects_keep_no_more_budget_counters_than_the_cap(db_url, usual):
    clock = Clock()
    rates = [RateLimitRule(scope="key", id="*", requests_per_minute=1000, tokens_per_minute=10**9)] if usual else []
    m = await _metering(
        db_url, clock, budgets=[BudgetRule(scope="key", id="*", amount="1", period="total")], rate_limits=rates
    )
    try:
        most = 0
        for i in range(6 * CAP):
            if i % 25 == 0:
                clock.now += 60  # the calls of several minutes (the rate windows come and go)
            await _spend(m, f"sub-{i}", f"r{i}", clock)
            most = max(most, _kept(m))
        # at most the cap, and what one caller's first call makes before the next shape looks them over
        assert most <= CAP + 1, most
    finally:
        await m.close()


async def _refused_alice(m) -> None:
    """alice's next call is refused for her spent budget."""
    with pytest.raises(ApiError) as refused:
        await m.limiter.admit(oidc("alice"), "g", PLAN, 10, 10, "alice-2")
    assert refused.value.body.code == "budget_exceeded"


async def test_a_dropped_counter_is_read_back_so_a_spent_budget_stays_spent(db_url):
    clock = Clock()
    # 10 prompt + 3000 completion tokens at 3 / 4 per 1M: 0.01203, past a total budget of 0.0100
    m = await _metering(db_url, clock, budgets=[BudgetRule(scope="key", id="*", amount="0.0100", period="total")])
    try:
        await _spend(m, "alice", "alice-1", clock, completion=3000)
        await _refused_alice(m)
        for i in range(3 * CAP):  # minted subjects push alice's counter out
            await _spend(m, f"sub-{i}", f"r{i}", clock)
        alice = next(k for k in m.limiter.counters.tables()[0] if k.startswith(m.limiter.bound.prefixes))
        assert "alice" not in alice, "alice's counter was kept: the test did not drop it"
        clock.now += 60
        with pytest.raises(ApiError) as again:
            await m.limiter.admit(oidc("alice"), "g", PLAN, 10, 10, "alice-3")
        assert again.value.body.code == "budget_exceeded"
        # a subject with nothing stored is read back as 0 and served
        await m.limiter.admit(oidc("new"), "g", PLAN, 10, 10, "new-1")
    finally:
        await m.close()


async def test_a_restart_seeds_no_more_than_the_cap_and_reads_the_rest_back(db_url):
    """Every subject that ever spent was seeded at start: past the cap they are read back as they come."""
    clock = Clock()
    budgets = [BudgetRule(scope="key", id="*", amount="0.0100", period="total")]
    cfg = MeteringConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:", budgets=budgets)
    first = Metering(cfg, PRICES, storage_url=db_url, clock=clock)
    first.limiter.bound.cap = 10**6  # the first process keeps them all
    await first.start()
    await _spend(first, "alice", "alice-1", clock, completion=3000)
    for i in range(2 * CAP):
        await _spend(first, f"sub-{i}", f"r{i}", clock)
    await first.close()
    again = Metering(cfg, PRICES, storage_url=db_url, clock=clock)
    again.limiter.bound.cap = CAP
    await again.start()
    try:
        assert _kept(again) <= CAP
        await _refused_alice(again)
    finally:
        await again.close()


async def test_a_counter_a_call_in_flight_holds_is_never_dropped(db_url):
    clock = Clock()
    m = await _metering(db_url, clock, budgets=[BudgetRule(scope="key", id="*", amount="0.0100", period="total")])
    try:
        held = await m.limiter.admit(oidc("alice"), "g", PLAN, 10, 10, "alice-1")  # not settled yet
        for i in range(3 * CAP):
            await _spend(m, f"sub-{i}", f"r{i}", clock)
        ((key, reserved),) = held.reserved
        assert m.limiter.counters.tables()[0][key] == reserved
        # settled after the drops: its cost lands on its counter, and the stored row matches it
        record = call("alice-1", "dep-b", prompt=10, completion=3000, tenant="acme", key_id=None, started=clock.now)
        m.record(msgspec.structs.replace(record, subject="alice"))
        assert m.limiter.counters.tables()[0][key] == 12_030_000
        await _refused_alice(m)
    finally:
        await m.close()


async def test_through_the_app_minted_oidc_subjects_stay_under_the_cap_and_a_spent_one_stays_refused(
    tmp_path, monkeypatch
):
    """The real app in process (SQLite storage, a local OIDC issuer, an OpenAI simulator): a tenant's identity
    provider mints a subject per call under a `"*"` total key budget; the counters stay under the cap, and a
    subject whose budget is spent is refused again after its counter was dropped (the read back on the request
    path: the tracker's awaited admission)."""
    monkeypatch.setenv("MH_TEST_BOUND_ADMIN", "mh-bootstrap-admin-key-for-budget-bound")
    sim = await start_simulator(SimulatorConfig(kind="openai", name="bound"))
    with LocalIssuer() as idp:
        cfg = single(
            simulated("openai", sim.url),
            deployment_fields={"price": price(3, 15)},
            storage=sqlite(tmp_path / "mh.db", refresh_s=0.05),
            identity=identity("MH_TEST_BOUND_ADMIN", trusting(idp, "corp")),
            metering={"budgets": [{"scope": "key", "id": "*", "amount": "0.0002", "period": "total"}]},
        )
        try:
            async with running(cfg) as app:
                (metering,) = [s for s in app.services if isinstance(s, Metering)]
                metering.limiter.bound.cap = CAP
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                    root = {"authorization": "Bearer mh-bootstrap-admin-key-for-budget-bound"}
                    made = await http.post("/admin/v1/tenants", json={"name": "acme"}, headers=root)
                    tenant = made.json()["id"]
                    body = {"model": "g", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}

                    async def chat(sub: str) -> httpx.Response:
                        token = idp.mint(tenant=tenant, sub=sub)
                        headers = {"authorization": f"Bearer {token}"}
                        return await http.post("/v1/chat/completions", json=body, headers=headers)

                    # a budget of 0.0002 USD: a call's reservation (~0.00015) fits it, its cost and another's do not
                    assert (await chat("alice")).status_code == 200
                    assert (await chat("alice")).status_code == 429
                    most = 0
                    for i in range(3 * CAP):
                        answer = await chat(f"sub-{i}")
                        assert answer.status_code == 200, answer.text
                        most = max(most, _kept(metering))
                    assert most <= CAP + 1, most
                    kept = [
                        k
                        for k in metering.limiter.counters.tables()[0]
                        if k.startswith(metering.limiter.bound.prefixes)
                    ]
                    assert not [k for k in kept if ":alice:" in k], "alice's counter was kept: the test did not drop it"
                    again = await chat("alice")
                    assert again.status_code == 429, again.text
                    assert again.json()["error"]["code"] == "budget_exceeded"
        finally:
            await sim.close()


def test_near_the_cap_the_counters_are_not_read_once_per_caller():
    """One look reads every counter: callers' new counters made one by one near the cap (a minute's rate
    windows of callers whose budget counters are kept) must not each cost one. A look past three quarters of
    the cap drops down to half; the next comes at least a quarter of the cap later."""
    from multihome.metering.budget_bound import BudgetBound

    bound = BudgetBound("p:", cap=400)
    values: dict[str, int] = {}
    looks = 0

    def made(key: str) -> None:
        nonlocal looks
        values[key] = 1
        if bound.due(len(values), 7):
            looks += 1
            bound.drop_idle(values, {}, held=())
        assert sum(1 for k in values if k.startswith(bound.prefixes)) <= 400

    for i in range(399):  # just under the cap
        made(f"p:b:key:t:s{i}:total:USD:all")
    looks = 0
    for i in range(2000):  # the kept callers' rate windows: never dropped
        made(f"p:r:key:t:s{i}:r:1")
    assert looks <= 2000 // 100 + 1, looks


def test_a_minute_that_prunes_many_counters_leaves_no_stale_room_past_the_cap():
    """The look at a minute's turn is skipped when the counters left after the prune are at most half the cap;
    the next look then came when the counters outnumbered the count the last look allowed for, a count that
    still held every counter the prune had just removed (the previous minutes' rate windows): that many more
    budget counters were made before any look, past the cap."""
    from multihome.metering.budget_bound import BudgetBound

    bound = BudgetBound("p:", cap=400)
    values: dict[str, int] = {}

    def made(key: str, wid: int) -> int:
        values[key] = 1
        if bound.due(len(values), wid):
            bound.drop_idle(values, {}, held=())
        return sum(1 for k in values if k.startswith(bound.prefixes))

    for i in range(100):  # callers' budget counters, and their rate windows of a minute
        made(f"p:b:key:t:s{i}:total:USD:all", 7)
    for i in range(1000):
        made(f"p:r:key:t:s{i % 100}:r:{i}", 7)
    for key in [k for k in values if k.startswith("p:r:")]:  # expired: pruned before the look (limiter.py)
        del values[key]
    most = max(made(f"p:b:key:t:s{i}:total:USD:all", 9) for i in range(100, 1100))
    assert most <= 400, most


async def test_the_admin_api_budget_status_of_a_dropped_counter_is_read_back(db_url):
    """The budget list's `spent_or_reserved` reads the counters: a key whose counter was dropped showed 0 spent
    (and its whole amount remaining) although its calls stay refused."""
    from types import SimpleNamespace

    from multihome.api.admin.budgets import _status

    clock = Clock()
    m = await _metering(db_url, clock, budgets=[BudgetRule(scope="key", id="*", amount="0.0100", period="total")])
    try:
        await _spend(m, "alice", "alice-1", clock, completion=3000)
        for i in range(3 * CAP):  # minted subjects push alice's counter out
            await _spend(m, f"sub-{i}", f"r{i}", clock)
        assert not [k for k in m.limiter.counters.tables()[0] if ":alice:" in k], "the test did not drop it"
        rows = [(b.scope, b.id, b.rule, True) for b in m.limiter.rules.budgets_for("key", "alice", "acme")]
        (shown,) = await _status(SimpleNamespace(metering=m), "acme", rows)  # type: ignore[arg-type]
        assert (shown["spent_or_reserved"], shown["remaining"]) == ("0.01203", "0")
    finally:
        await m.close()


@pytest.mark.parametrize("amount", ["-0", "-0.0", -0.0], ids=["text", "text-places", "yaml-number"])
async def test_a_config_budget_of_negative_zero_is_a_budget_of_0(db_url, amount):
    """A config budget may be 0 (every call refused); spelled "-0" it is that budget, and its 429 says 0 (as written), not -0."""
    m = await _metering(db_url, Clock(), budgets=[BudgetRule(scope="key", id="*", amount=amount)])
    try:
        with pytest.raises(ApiError) as refused:
            await m.limiter.admit(oidc("alice"), "g", PLAN, 10, 10, "alice-1")
        assert refused.value.body.code == "budget_exceeded"
        message = refused.value.body.message
        assert "monthly budget of 0" in message and "of -0" not in message, message
    finally:
        await m.close()
