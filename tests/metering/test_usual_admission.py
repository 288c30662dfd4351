"""The usual shape's admission (one hard budget, one requests- and one tokens-per-minute limit, in-process
counters), written out once per shape, admits, refuses, counts, reserves and heads the answer exactly as
the limiter's general path does; and its settlement on in-process counters (written out in Ticket.settle)
corrects them exactly as LocalCounters.adjust2 does."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.config.metering import BudgetRule, MeteringConfig, PromptReserve, RateLimitRule
from multihome.metering import limiter as limiter_module
from multihome.metering.counters import LocalCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import DeploymentPrice, PriceTable
from multihome.schema.errors import ApiError

from .conftest import Dep, principal

PRICES = PriceTable({"dep-a": DeploymentPrice.of(1.5, 7.0, None, "USD")})  # dep-free has no price
START = 1_800_000_000.0  # a minute's start (UTC)

# (prompt tokens, max output tokens or None, choices, ms after the previous call, settle it (cost, tokens))
_call = st.tuples(
    st.integers(0, 3000),
    st.one_of(st.none(), st.integers(1, 5000)),
    st.integers(1, 3),
    st.integers(0, 25_000),
    st.one_of(st.none(), st.tuples(st.integers(0, 50_000_000), st.integers(0, 9000))),
)


class _ThroughAdjust(LocalCounters):
    """In-process counters that give settlement no table of their own: it corrects them through `adjust2`."""

    def tables(self):
        return None, self._exp


def _limiter(clock, budget: str, rpm: int, tpm: int, usual: bool, monkeypatch) -> Limiter:
    cfg = MeteringConfig(
        budgets=[BudgetRule(scope="key", id="*", amount=budget, mode="hard")],
        rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=rpm, tokens_per_minute=tpm)],
        prompt_reserve=PromptReserve(factor=1.3, extra_tokens=7),
        default_max_output_tokens=1500,
    )
    with monkeypatch.context() as m:
        if not usual:
            m.setattr(limiter_module, "_usual_admission", lambda *args: None)
        lim = Limiter(cfg, PRICES, None if usual else _ThroughAdjust(), clock=clock)
        asyncio.run(lim.counters.start())
    return lim


def _live(lim: Limiter, now: float) -> dict:
    counters = lim.counters
    assert isinstance(counters, LocalCounters)
    now_ms = int(now * 1000)
    return {k: (v, counters._exp.get(k)) for k, v in counters._v.items() if counters._exp.get(k, now_ms + 1) > now_ms}


def _admit(lim: Limiter, monkeypatch, usual: bool, request_id: str, prompt, max_out, choices):
    with monkeypatch.context() as m:
        if not usual:  # shapes made now (a new minute) take the general path too
            m.setattr(limiter_module, "_usual_admission", lambda *args: None)
        try:
            ticket = lim.at_once(principal(key_id="key_a"), "g", [Dep("dep-a")], prompt, max_out, request_id, choices)
        except ApiError as err:
            return err
    assert ticket is not None
    return ticket


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["0.01", "0.05", "1000"]),
    st.integers(1, 12),
    st.integers(1, 20_000),
    st.lists(_call, min_size=1, max_size=25),
)
def test_the_usual_admission_is_the_general_one(budget, rpm, tpm, calls):
    with pytest.MonkeyPatch.context() as monkeypatch:
        now = [START + 0.25]
        usual = _limiter(lambda: now[0], budget, rpm, tpm, True, monkeypatch)
        general = _limiter(lambda: now[0], budget, rpm, tpm, False, monkeypatch)
        for n, (prompt, max_out, choices, wait_ms, settle) in enumerate(calls):
            now[0] += wait_ms / 1000
            a = _admit(usual, monkeypatch, True, f"r{n}", prompt, max_out, choices)
            b = _admit(general, monkeypatch, False, f"r{n}", prompt, max_out, choices)
            assert type(a) is type(b)
            if isinstance(a, ApiError):
                assert isinstance(b, ApiError)
                assert (a.status, a.body, a.headers) == (b.status, b.body, b.headers)
            else:
                assert not isinstance(b, ApiError)
                assert a.headers == b.headers
                assert a.reserved == b.reserved
                assert a._slots.local is usual.counters._v and b._slots.local is None
                assert (a.deployment, a.skip, a.over_budget, a.gen) == (b.deployment, b.skip, b.over_budget, b.gen)
                if settle is not None:
                    assert a.settle(settle[0], "USD", settle[1]) and b.settle(settle[0], "USD", settle[1])
            assert usual.open.keys() == general.open.keys()
            # The same live counters (the usual path prunes expired ones when a new minute's shape is made,
            # the general one every 4096 admissions: expired counters are read by neither).
            assert _live(usual, now[0]) == _live(general, now[0])


def test_the_usual_shape_is_the_one_the_usual_path_takes(monkeypatch):
    lim = _limiter(lambda: START + 1, "1000", 10, 10_000, True, monkeypatch)
    ticket = lim.at_once(principal(key_id="key_a"), "g", [Dep("dep-a")], 10, 20, "a")
    (shape,) = lim._shapes.values()
    assert shape.usual is not None and ticket is lim.open["a"]
    # An unpriced deployment reserves nothing on the budget: not the usual shape, the general path admits it.
    lim.at_once(principal(key_id="key_a"), "g", [Dep("dep-free")], 10, 20, "b")
    assert [s.usual is None for s in lim._shapes.values()] == [False, True]


def test_expired_minutes_are_pruned_when_a_new_minutes_usual_shape_is_made(monkeypatch):
    # The usual admission counts no admissions to prune by: a new minute's shape prunes instead, so a
    # long-running process keeps only the counters that have not expired.
    now = [START + 1]
    lim = _limiter(lambda: now[0], "1000", 10, 10_000, True, monkeypatch)
    for minute in range(6):
        now[0] = START + 60 * minute + 1
        assert lim.at_once(principal(key_id="key_a"), "g", [Dep("dep-a")], 10, 20, f"m{minute}") is not None
    minutes = sorted(key.rsplit(":", 1)[-1] for key in lim.counters._v if key.split(":")[-2] == "r")
    # minute 4's counters outlive it by a grace period (a minute); minute 3's and before are gone
    assert minutes == [str(int(START // 60) + 4), str(int(START // 60) + 5)]
    assert lim.counters._v.keys() == lim.counters._exp.keys()


# What the test above leaves out: callers that share a budget (tenant or team scope), day, month and total
# periods, a day's end, and settlements and releases that come calls later (after a minute's or the day's
# end, when the usual path may have pruned the counters they correct). The two limiters must keep the same
# live counters, refuse the same calls with the same 429s and head the same answers.
MIDNIGHT = 1_800_057_600.0  # a UTC day's start
CALLERS = {
    "k1": principal(key_id="key_1", team="team_x"),
    "k2": principal(key_id="key_2", team="team_x"),
    "k3": principal(tenant="ten_b", team="team_y", key_id="key_3"),
}
TWO_PRICES = PriceTable(
    {"dep-a": DeploymentPrice.of(1.5, 7.0, None, "USD"), "dep-b": DeploymentPrice.of(3, 9.0, None, "USD")}
)
DEPLOYMENTS = {"a": Dep("dep-a"), "b": Dep("dep-b", max_output_tokens=700)}
# (caller, deployment, prompt tokens, max output tokens or None, choices, ms after the previous call,
#  None or (settled that many calls later, cost, tokens, or released instead))
_shared_call = st.tuples(
    st.sampled_from(sorted(CALLERS)),
    st.sampled_from(sorted(DEPLOYMENTS)),
    st.integers(0, 3000),
    st.one_of(st.none(), st.integers(0, 5000)),
    st.integers(1, 3),
    st.integers(0, 40_000),
    st.one_of(
        st.none(), st.tuples(st.integers(0, 40), st.integers(0, 50_000_000), st.integers(0, 9000), st.booleans())
    ),
)


def _shared_limiter(clock, usual: bool, budget_rule: BudgetRule, rate_rule: RateLimitRule) -> Limiter:
    cfg = MeteringConfig(
        budgets=[budget_rule],
        rate_limits=[rate_rule],
        prompt_reserve=PromptReserve(factor=1.3, extra_tokens=7),
        default_max_output_tokens=1500,
    )
    lim = Limiter(cfg, TWO_PRICES, None if usual else _ThroughAdjust(), clock=clock)
    asyncio.run(lim.counters.start())
    return lim


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["tenant", "team", "key"]),
    st.sampled_from(["day", "month", "total"]),
    st.sampled_from(["0.01", "0.05", "1000"]),
    st.sampled_from(["tenant", "team", "key"]),
    st.integers(1, 12),
    st.integers(1, 20_000),
    st.lists(_shared_call, min_size=1, max_size=30),
)
def test_callers_sharing_counters_and_late_settlements_across_a_days_end(
    scope, period, budget, rate_scope, rpm, tpm, calls
):
    budget_rule = BudgetRule(scope=scope, id="*", amount=budget, mode="hard", period=period)
    rate_rule = RateLimitRule(scope=rate_scope, id="*", requests_per_minute=rpm, tokens_per_minute=tpm)
    with pytest.MonkeyPatch.context() as monkeypatch:
        now = [MIDNIGHT - 90]  # the calls run over the day's end
        usual = _shared_limiter(lambda: now[0], True, budget_rule, rate_rule)
        general = _shared_limiter(lambda: now[0], False, budget_rule, rate_rule)
        made = limiter_module._usual_admission
        later: list[tuple[int, object, object, int, int, bool]] = []
        for n, (who, dep, prompt, max_out, choices, wait_ms, settle) in enumerate(calls):
            now[0] += wait_ms / 1000
            for due in [item for item in later if item[0] <= n]:
                later.remove(due)
                _, a_ticket, b_ticket, cost, tokens, release = due
                if release:
                    assert a_ticket.release() and b_ticket.release()
                else:
                    assert a_ticket.settle(cost, "USD", tokens) and b_ticket.settle(cost, "USD", tokens)
            answers = []
            for lim, made_here in ((usual, made), (general, lambda *args: None)):
                monkeypatch.setattr(limiter_module, "_usual_admission", made_here)  # for shapes made now
                try:
                    answers.append(
                        lim.at_once(CALLERS[who], "g", [DEPLOYMENTS[dep]], prompt, max_out, f"r{n}", choices)
                    )
                except ApiError as err:
                    answers.append(err)
            a, b = answers
            assert type(a) is type(b)
            if isinstance(a, ApiError):
                assert isinstance(b, ApiError)
                assert (a.status, a.body, a.headers) == (b.status, b.body, b.headers)
            else:
                assert a is not None and b is not None and not isinstance(b, ApiError)
                assert list(a.headers) == list(b.headers) and a.reserved == b.reserved
                if settle is not None:
                    later.append((n + settle[0], a, b, settle[1], settle[2], settle[3]))
                else:  # released after the last call
                    later.append((len(calls), a, b, 0, 0, True))
            assert usual.open.keys() == general.open.keys()
            assert _live(usual, now[0]) == _live(general, now[0])
        assert all(shape.usual is not None for shape in usual._shapes.values())  # every caller's is the usual shape
        for _, a_ticket, b_ticket, cost, tokens, release in later:
            if release:
                assert a_ticket.release() and b_ticket.release()
            else:
                assert a_ticket.settle(cost, "USD", tokens) and b_ticket.settle(cost, "USD", tokens)
        assert not usual.open and not general.open
        assert _live(usual, now[0]) == _live(general, now[0])
