"""In-process counters: the flat admission (budgets and rates as parallel lists) decides and counts
exactly as the general one (a Plan)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.metering.counters import OK, LocalCounters, Plan

NOW_MS = 1_000_000

# Budgets: (limit, reserve, hard); rates: (limit, increment); drawn small so that refusals are common.
_budget = st.tuples(st.integers(0, 40), st.integers(0, 15), st.booleans())
_rate = st.tuples(st.integers(0, 40), st.integers(0, 15))
_admission = st.tuples(st.lists(_budget, max_size=3), st.lists(_rate, max_size=3))


def _both(budgets, rates) -> tuple[Plan, tuple]:
    plan = Plan(
        [(f"b{i}", limit, reserve, hard, NOW_MS + 9) for i, (limit, reserve, hard) in enumerate(budgets)],
        [(f"r{i}", limit, incr) for i, (limit, incr) in enumerate(rates)],
        [],
        NOW_MS + 7,
    )
    keys = [key for key, *_ in plan.budgets] + [key for key, *_ in plan.rates]
    limits = [limit if hard else float("inf") for _, limit, _, hard, _ in plan.budgets]
    limits += [limit for _, limit, _ in plan.rates]
    incrs = [reserve for _, _, reserve, _, _ in plan.budgets] + [incr for _, _, incr in plan.rates]
    # Each counter's increment picked from a list of values by index, as the limiter's shapes do
    # (values in reverse order, so that an index is not merely the counter's position).
    values = incrs[::-1]
    rows = [(key, limit, len(incrs) - 1 - i) for i, (key, limit) in enumerate(zip(keys, limits))]
    expiring = [(key, expire) for key, *_, expire in plan.budgets] + [(key, NOW_MS + 7) for key, *_ in plan.rates]
    return plan, (rows, values, expiring, NOW_MS)


@settings(max_examples=300, deadline=None)
@given(st.lists(_admission, min_size=1, max_size=12))
def test_flat_admission_decides_and_counts_as_a_plan(admissions):
    general, flat = LocalCounters(), LocalCounters()
    for budgets, rates in admissions:
        plan, args = _both(budgets, rates)
        outcome = general.admit(plan, NOW_MS)
        rows, values, expiring, now_ms = args
        # The function a shape makes once (written out up to three counters), and admit_flat (its general form).
        after = flat.flat(rows, expiring)(values, now_ms) if len(admissions) % 2 else flat.admit_flat(*args)
        assert (after is not None) == (outcome.code == OK)
        if after is not None:
            assert after == outcome.values
        assert flat._v == general._v and flat._exp == general._exp  # a refusal leaves no trace in either


def test_adjust2_is_adjust_of_two_deltas():
    # Zero deltas skipped, a counter that is gone (expired) not revived, negative deltas applied.
    for d1, d2 in ((5, -3), (0, 7), (-2, 0), (0, 0)):
        by_pairs, by_two = LocalCounters(), LocalCounters()
        for c in (by_pairs, by_two):
            c._v.update({"a": 10, "b": 20})
        by_pairs.adjust([("a", d1), ("gone", d2), ("b", d2)])
        by_two.adjust2("a", d1, "gone", d2)
        by_two.adjust2("b", d2, "a", 0)
        assert by_two._v == by_pairs._v and "gone" not in by_two._v
