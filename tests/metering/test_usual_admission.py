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
