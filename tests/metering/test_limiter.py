"""Budgets by reservation and settlement, rate limits, headers: in process and through a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
import types
import uuid

import pytest

from multihome.config.metering import BudgetRule, MeteringConfig, PromptReserve, RateLimitRule
from multihome.metering.counters import LocalCounters
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.metering.rules import Rules
from multihome.schema.errors import ApiError

from .conftest import Dep, principal

pytestmark = pytest.mark.anyio
# The test clock: 10 s into the next minute, set per test by the fixture below. Counters expire in
# real Redis time, so it must stay near the real clock.
NOW = 0.0


@pytest.fixture(autouse=True)
def _now_is_near_real_time():
    # Reset per test, not once at import: later in a long suite an import-time NOW lies in the past,
    # and the counters Redis is told to expire then vanish at once.
    global NOW
    NOW = (time.time() // 60) * 60 + 70


PRICES = PriceTable(
    {
        "dep-a": DeploymentPrice.of(1.0, 2.0, None, "USD"),  # per 1M tokens
        "dep-b": DeploymentPrice.of(3.0, 4.0, None, "USD"),
    }
)


@pytest.fixture(params=["local", "redis"])
def counters_factory(request):
    if request.param == "local":
        yield lambda: LocalCounters()
        return
    server = request.getfixturevalue("redis_server")
    made = []

    def make():
        # A generous deadline: on a busy CI machine a 2 s one failed every admission open (not what these test).
        made.append(RedisCounters(server.url, timeout_s=30.0))
        return made[-1]

    yield make


async def limiter(factory, clock=lambda: NOW, counters=None, **cfg) -> Limiter:
    # every test gets its own key space on the shared redis-server
    cfg = MeteringConfig(key_prefix=f"t{uuid.uuid4().hex[:8]}:", **cfg)
    lim = Limiter(cfg, PRICES, counters if counters is not None else factory(), clock)
    await lim.start()
    return lim


def budget(amount, **kw):
    return BudgetRule(scope=kw.pop("scope", "tenant"), id=kw.pop("id", "ten_a"), amount=amount, **kw)


async def test_reservation_uses_dearest_planned_prices_and_settlement_replaces_it(counters_factory):
    # Reserve: (ceil(1000*1.25)+16) prompt tokens at 3.0 + 500 output at 4.0 per 1M = 0.003798 + 0.002
    lim = await limiter(counters_factory, budgets=[budget("0.0100")])
    p, plan = principal(), [Dep("dep-a"), Dep("dep-b")]
    t1 = await lim.admit(p, "g", plan, 1000, 500, "r1")
    assert t1.reserved[0][1] == 5_798_000
    # Only one reservation fits in 0.01: the second worst case would reach 0.011596.
    with pytest.raises(ApiError) as refused:
        await lim.admit(p, "g", plan, 1000, 500, "r2")
    err = refused.value
    assert err.status == 429 and err.body.code == "budget_exceeded" and err.body.type == "insufficient_quota"
    assert "tenant ten_a's monthly budget of 0.0100 USD" in err.body.message and "retry-after" in err.headers
    # The call cost 0.002 in fact: settling frees the rest, and the next call fits again.
    assert lim.settle("r1", 2_000_000, "USD", 1500) is t1 and not lim.open
    assert not t1.settle(1, "USD", 1)  # exactly once
    await lim.drain()
    key = t1.reserved[0][0]
    assert await lim.counters.read([key], int(NOW * 1000)) == [2_000_000]
    await lim.admit(p, "g", plan, 1000, 500, "r3")
    await lim.close()


async def _reserved(lim, body: dict, deployments, request_id: str, unchecked: dict | None = None) -> int:
    """Admit a chat body the way the front door does (through a CallTracker); its reservation.
    `unchecked`: fields set on the parsed request past the front door's bounds (the limiter's own guard)."""
    import msgspec

    from multihome.accounting.tracker import Accounting
    from multihome.schema import estimate
    from multihome.schema.chat import parse_chat

    tracker = Accounting(limiter=lim).begin(request_id, "chat", principal(), b"{}")
    tracker.request = parse_chat(
        json.dumps({"model": "g", "messages": [{"role": "user", "content": "hi"}], **body}).encode()
    ).request
    if unchecked:
        tracker.request = msgspec.structs.replace(tracker.request, **unchecked)
    await tracker.admit(
        types.SimpleNamespace(name="g", fallback_deployments=(), answers=1),
        deployments,
        estimate.output_tokens(tracker.request),
    )
    return tracker.ticket.reserved[0][1]


async def test_the_prompt_is_estimated_only_while_a_rule_applies(monkeypatch):
    """No budget or rate limit: admission asks for no estimate of the prompt (storage alone meters
    every call with nothing to reserve); rules set at runtime are followed from the next call."""
    from multihome.metering.rules import Rules
    from multihome.schema import estimate

    estimated: list[int] = []
    real = estimate.prompt_tokens  # the prompt's estimate (admission's, or the tracker's own for a chat request)
    monkeypatch.setattr(estimate, "prompt_tokens", lambda req: estimated.append(1) or real(req))
    lim = await limiter(lambda: LocalCounters())
    await _reserved_or_none(lim, {"max_tokens": 20}, [Dep("dep-a")], "no-rules")
    assert estimated == []
    lim.use_rules(Rules(MeteringConfig(budgets=[budget("100")])))
    assert await _reserved_or_none(lim, {"max_tokens": 20}, [Dep("dep-a")], "ruled") > 0
    assert estimated == [1]
    await lim.close()


async def _reserved_or_none(lim, body: dict, deployments, request_id: str) -> int | None:
    """As `_reserved`, through `admit_at_once` (the front door's first try); None: nothing reserved."""
    from multihome.accounting.tracker import Accounting
    from multihome.schema.chat import parse_chat

    tracker = Accounting(limiter=lim).begin(request_id, "chat", principal(), b"{}")
    tracker.request = parse_chat(
        json.dumps({"model": "g", "messages": [{"role": "user", "content": "hi"}], **body}).encode()
    ).request
    assert (
        tracker.admit_at_once(types.SimpleNamespace(name="g", fallback_deployments=(), answers=1), deployments, 20)
        is not None
    )
    reserved = tracker.ticket.reserved
    return reserved[0][1] if reserved else None


async def test_reservation_covers_every_choice_and_settles_to_actual(counters_factory):
    # dep-a: output 2.0 per 1M tokens = 2,000 nano-units per token. n=8 generates 8 x max_tokens.
    lim = await limiter(counters_factory, budgets=[budget("100")], default_max_output_tokens=4096)
    one = await _reserved(lim, {"max_tokens": 20}, [Dep("dep-a")], "n1")
    assert await _reserved(lim, {"max_tokens": 20, "n": 8}, [Dep("dep-a")], "n8") - one == 7 * 20 * 2000
    # best_of (passed through to OpenAI-compatible servers) generates best_of sequences, returns n.
    assert await _reserved(lim, {"max_tokens": 20, "n": 2, "best_of": 5}, [Dep("dep-a")], "bo") - one == 4 * 20 * 2000
    # No max_tokens: each choice may write the most any planned deployment may, and one that
    # declares no max_output_tokens may write default_max_output_tokens (not the other's 1000).
    no_cap = await _reserved(lim, {"n": 3}, [Dep("dep-a", max_output_tokens=1000), Dep("dep-a")], "nocap")
    assert no_cap - one == (3 * 4096 - 20) * 2000
    # Settled to what the call really cost: the counter holds the actual cost, not the reservation.
    for rid in ("n1", "bo", "nocap"):
        lim.release(rid)
    ticket = lim.settle("n8", 123_000, "USD", 100)
    await lim.drain()
    assert await lim.counters.read([ticket.reserved[0][0]], int(NOW * 1000)) == [123_000]
    await lim.close()


async def test_a_reloaded_config_reserves_with_its_prompt_reserve_and_output_cap(counters_factory):
    # Reserve: ceil(1000 x factor) + extra prompt tokens at dep-a's input price (1.0 per 1M: 1,000 nano-units a
    # token) plus the output cap at 2.0 per 1M. A reload changes both; the next admission uses the new ones.
    lim = await limiter(counters_factory, budgets=[budget("100")], default_max_output_tokens=100)
    p = principal()
    before = await lim.admit(p, "g", [Dep("dep-a")], 1000, None, "before")
    assert before.reserved[0][1] == (1250 + 16) * 1000 + 100 * 2000
    cfg = MeteringConfig(
        key_prefix=lim.cfg.key_prefix,
        budgets=[budget("100")],
        default_max_output_tokens=300,
        prompt_reserve=PromptReserve(factor=2.0, extra_tokens=0),
    )
    lim.reconfigure(cfg, PRICES)
    after = await lim.admit(p, "g", [Dep("dep-a")], 1000, None, "after")
    assert after.reserved[0][1] == 2000 * 1000 + 300 * 2000
    await lim.close()


async def test_absurd_output_cap_is_counted_not_a_script_error_for_its_batch(counters_factory):
    # max_tokens x best_of far past 2^63 nano-units: a soft budget adds the reservation (INCRBY),
    # which would fail the whole Redis batch, and every call in it would go unlimited (fail_open).
    # It is clamped: the call is admitted and flagged, and the batch's other calls are counted. (The front
    # door refuses such integers now, schema/bounds.py; the limiter keeps its own guard.)
    lim = await limiter(counters_factory, budgets=[budget("1", mode="soft")])
    huge = {"max_tokens": 1 << 62, "best_of": 1 << 62}
    held = await asyncio.gather(
        _reserved(lim, {}, [Dep("dep-a")], "huge", unchecked=huge),
        _reserved(lim, {"max_tokens": 5}, [Dep("dep-a")], "fine"),
    )
    assert lim.open["huge"].over_budget and held[0] < 1 << 53
    assert held[1] > 0 and b"x-multihome-limits" not in dict(lim.open["fine"].headers)
    await lim.close()


async def test_unanswered_call_releases_its_reservation(counters_factory):
    lim = await limiter(counters_factory, budgets=[budget("1")], ticket_ttl_s=0.0)
    t = await lim.admit(principal(), "g", [Dep("dep-a")], 100, 100, "gone")
    key = t.reserved[0][0]
    lim.release("gone")
    await lim.drain()
    assert await lim.counters.read([key], int(NOW * 1000)) == [0]
    # and one the front door forgot entirely is released by the sweeper
    t2 = await lim.admit(principal(), "g", [Dep("dep-a")], 100, 100, "forgotten")
    assert lim.sweep() == 1 and t2.settled
    await lim.drain()
    assert await lim.counters.read([key], int(NOW * 1000)) == [0]
    await lim.close()


async def test_soft_budget_allows_and_flags(counters_factory):
    lim = await limiter(counters_factory, budgets=[budget("0.000001", mode="soft", scope="key", id="*")])
    t = await lim.admit(principal(), "g", [Dep("dep-a")], 1000, 100, "r")
    assert t.over_budget
    assert dict(t.headers)[b"x-multihome-budget-warning"].startswith(b"key key_a's monthly budget")
    await lim.close()


async def test_rate_limit_admits_exactly_the_limit_across_two_limiters(counters_factory):
    # Two replicas (two Limiters) on the same counters: 200 concurrent calls, 37 per minute.
    shared = counters_factory()
    rules = [RateLimitRule(scope="key", id="*", requests_per_minute=37)]
    lim1 = await limiter(counters_factory, rate_limits=rules, counters=shared)
    lim2 = Limiter(lim1.cfg, PRICES, shared if isinstance(shared, LocalCounters) else counters_factory(), lambda: NOW)
    await lim2.start()

    async def one(i):
        try:
            return await (lim1, lim2)[i % 2].admit(principal(), "g", [Dep("dep-a")], 10, 10, f"r{i}")
        except ApiError as exc:
            return exc

    results = await asyncio.gather(*(one(i) for i in range(200)))
    tickets = [r for r in results if not isinstance(r, ApiError)]
    refusals = [r for r in results if isinstance(r, ApiError)]
    assert len(tickets) == 37 and len(refusals) == 163
    err = refusals[0]
    assert err.status == 429 and err.body.code == "rate_limit_exceeded" and err.body.type == "requests"
    assert err.headers["retry-after"] == "50" and err.headers["retry-after-ms"] == "50000"
    assert err.headers["x-ratelimit-remaining-requests"] == "0" and err.headers["x-ratelimit-reset-requests"] == "50s"
    remaining = sorted(int(dict(t.headers)[b"x-ratelimit-remaining-requests"]) for t in tickets)
    assert remaining == list(range(37))
    assert all(dict(t.headers)[b"x-ratelimit-limit-requests"] == b"37" for t in tickets)
    assert dict(tickets[0].headers)[b"x-ratelimit-reset-requests"] == b"50s"
    await lim1.close()
    await lim2.close()


async def test_headers_name_the_most_constrained_of_several_counters_of_a_kind(counters_factory):
    # The tenant's and the key's requests per minute both count; the headers report the one with the
    # least left (and the one tokens counter), whichever way the counters are asked.
    lim = await limiter(
        counters_factory,
        rate_limits=[
            RateLimitRule(scope="tenant", id="ten_a", requests_per_minute=10, tokens_per_minute=1000),
            RateLimitRule(scope="key", id="key_a", requests_per_minute=3),
        ],
    )
    for i in range(2):
        t = await lim.admit(principal(), "g", [Dep("dep-a")], 10, 20, f"r{i}")
    assert t.headers == [
        (b"x-ratelimit-limit-requests", b"3"),
        (b"x-ratelimit-remaining-requests", b"1"),
        (b"x-ratelimit-reset-requests", b"50s"),
        (b"x-ratelimit-limit-tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", b"940"),
        (b"x-ratelimit-reset-tokens", b"50s"),
    ]
    await lim.close()


async def test_the_usual_shapes_headers_to_the_byte(counters_factory):
    # One counter of each kind (the usual shape, whose headers are made by a function fixed per shape):
    # requests then tokens, limit, what remains and the reset counting down to the minute's end.
    now = [NOW + 0.5]  # 49.5 s before the minute ends
    lim = await limiter(
        counters_factory,
        clock=lambda: now[0],
        budgets=[budget("100", scope="key", id="*")],
        rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=3, tokens_per_minute=1000)],
    )
    first = await lim.admit(principal(), "g", [Dep("dep-a")], 10, 20, "a")
    assert first.headers == [
        (b"x-ratelimit-limit-requests", b"3"),
        (b"x-ratelimit-remaining-requests", b"2"),
        (b"x-ratelimit-reset-requests", b"49.5s"),
        (b"x-ratelimit-limit-tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", b"970"),
        (b"x-ratelimit-reset-tokens", b"49.5s"),
    ]
    now[0] += 49.25  # 250 ms left
    second = await lim.admit(principal(), "g", [Dep("dep-a")], 100, 870, "b")
    assert second.headers == [
        (b"x-ratelimit-limit-requests", b"3"),
        (b"x-ratelimit-remaining-requests", b"1"),
        (b"x-ratelimit-reset-requests", b"250ms"),
        (b"x-ratelimit-limit-tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", b"0"),
        (b"x-ratelimit-reset-tokens", b"250ms"),
    ]
    # A shape with one kind: its three headers alone.
    rules = [RateLimitRule(scope="key", id="*", requests_per_minute=7)]
    lim.use_rules(Rules(MeteringConfig(key_prefix=lim.cfg.key_prefix, rate_limits=rules)))
    third = await lim.admit(principal(), "g", [Dep("dep-a")], 1, 1, "c")
    assert third.headers == [
        (b"x-ratelimit-limit-requests", b"7"),
        (b"x-ratelimit-remaining-requests", b"4"),  # the key's counter of this minute: a, b, c
        (b"x-ratelimit-reset-requests", b"250ms"),
    ]
    await lim.close()


async def test_in_process_counters_admit_without_a_coroutine(counters_factory):
    # The hot path asks `at_once` first: in-process counters answer it; shared ones leave it to `admit`.
    lim = await limiter(counters_factory, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=5)])
    ticket = lim.at_once(principal(), "g", [Dep("dep-a")], 1, 1, "now")
    if isinstance(lim.counters, LocalCounters):
        assert ticket is not None and lim.open["now"] is ticket
        assert dict(ticket.headers)[b"x-ratelimit-remaining-requests"] == b"4"
    else:
        assert ticket is None and not lim.open
    await lim.close()


async def test_next_window_starts_fresh(counters_factory):
    now = [NOW]
    lim = await limiter(
        counters_factory,
        clock=lambda: now[0],
        rate_limits=[RateLimitRule(scope="tenant", id="ten_a", requests_per_minute=1)],
    )
    await lim.admit(principal(), "g", [Dep("dep-a")], 1, 1, "a")
    with pytest.raises(ApiError):
        await lim.admit(principal(), "g", [Dep("dep-a")], 1, 1, "b")
    now[0] += 50  # next minute
    await lim.admit(principal(), "g", [Dep("dep-a")], 1, 1, "c")
    await lim.close()


async def test_a_daily_budget_used_up_today_admits_again_tomorrow(counters_factory):
    # The counter keys of a caller's route are worked out once per minute and day: a new day must
    # count against a new bucket, not keep refusing on yesterday's.
    now = [NOW]
    lim = await limiter(counters_factory, clock=lambda: now[0], budgets=[budget("0.0005", period="day")])
    first = await lim.admit(principal(), "g", [Dep("dep-a")], 100, 100, "a")  # reserves 0.0003 of 0.0005
    with pytest.raises(ApiError) as refused:
        await lim.admit(principal(), "g", [Dep("dep-a")], 100, 100, "b")
    assert refused.value.body.code == "budget_exceeded"
    now[0] += 86_400
    second = await lim.admit(principal(), "g", [Dep("dep-a")], 100, 100, "c")
    assert second.reserved[0][0] != first.reserved[0][0]  # tomorrow's bucket
    await lim.close()


async def test_tokens_per_minute_reserved_then_settled_to_actual(counters_factory):
    lim = await limiter(counters_factory, rate_limits=[RateLimitRule(scope="team", id="*", tokens_per_minute=1000)])
    p = principal(team="team_x")
    t = await lim.admit(p, "g", [Dep("dep-a")], 200, 300, "a")  # 500 estimated
    h = dict(t.headers)
    assert h[b"x-ratelimit-limit-tokens"] == b"1000" and h[b"x-ratelimit-remaining-tokens"] == b"500"
    with pytest.raises(ApiError) as refused:
        await lim.admit(p, "g", [Dep("dep-a")], 400, 300, "b")  # 700 more would pass 1000
    assert refused.value.body.type == "tokens"
    lim.settle("a", 0, "USD", 120)  # it used 120 in fact
    await lim.drain()
    t3 = await lim.admit(p, "g", [Dep("dep-a")], 400, 300, "c")
    assert dict(t3.headers)[b"x-ratelimit-remaining-tokens"] == b"180"
    await lim.close()


async def test_deployment_limit_charges_first_deployment_with_room(counters_factory):
    lim = await limiter(
        counters_factory,
        rate_limits=[
            RateLimitRule(scope="deployment", id="dep-a", requests_per_minute=1),
            RateLimitRule(scope="deployment", id="dep-b", requests_per_minute=1),
        ],
    )
    plan = [Dep("dep-a"), Dep("dep-b")]
    t1 = await lim.admit(principal(), "g", plan, 1, 1, "1")
    t2 = await lim.admit(principal(), "g", plan, 1, 1, "2")
    assert (t1.deployment, t1.skip) == ("dep-a", frozenset())
    assert (t2.deployment, t2.skip) == ("dep-b", frozenset({"dep-a"}))
    with pytest.raises(ApiError) as refused:
        await lim.admit(principal(), "g", plan, 1, 1, "3")
    assert "every deployment" in refused.value.body.message
    await lim.close()


async def test_no_rules_no_headers_and_no_state(counters_factory):
    lim = await limiter(counters_factory)
    t = await lim.admit(principal(), "g", [Dep("dep-a")], 1, 1, "1")
    assert t.headers == [] and not lim.open
    await lim.close()


async def test_redis_down_fails_open_or_closed():
    for fail_open in (True, False):
        lim = Limiter(
            MeteringConfig(fail_open=fail_open, budgets=[budget("1")]),
            PRICES,
            RedisCounters("redis://127.0.0.1:9/0"),
            lambda: NOW,
        )
        if fail_open:
            t = await lim.admit(principal(), "g", [Dep("dep-a")], 1, 1, "1")
            assert dict(t.headers)[b"x-multihome-limits"] == b"unavailable"
        else:
            with pytest.raises(ApiError) as refused:
                await lim.admit(principal(), "g", [Dep("dep-a")], 1, 1, "1")
            assert refused.value.status == 503 and refused.value.body.code == "limits_unavailable"
        await lim.counters.close(timeout=0.5)  # nothing reaches an unreachable Redis: not 5 s of tries


@pytest.mark.parametrize(("amount", "shown"), [("0.000000001", "0.000000001"), ("1E+3", "1000"), ("0.0100", "0.0100")])
def test_a_budget_is_named_in_fixed_point_as_written(amount, shown):
    """A budget's 429 said "daily budget of 1E-9 USD" for one of 0.000000001."""
    from multihome.metering.rules import BudgetSpec

    spec = BudgetSpec("k", "tenant", "ten_a", 1, True, "day", "USD", budget(amount, period="day"))
    assert spec.describe() == f"tenant ten_a's daily budget of {shown} USD"
