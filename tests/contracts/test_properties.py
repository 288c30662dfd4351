"""Property tests on the real ledger (SQLite): the cap is never exceeded, replay is idempotent,
sums are exact to the cent, and the order of arrival does not change the total."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multihome.contracts import money
from multihome.contracts.ledger import Ledger, Pending
from multihome.storage import migrate_sync
from multihome.storage.engine import create_engine

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

costs = st.lists(st.decimals(min_value="0.000001", max_value="500", places=6), min_size=1, max_size=30)
rates = st.decimals(min_value="0", max_value="1", places=4)
caps = st.one_of(st.none(), st.decimals(min_value="0", max_value="2000", places=2))


@pytest.fixture(scope="module")
def db_url(tmp_path_factory):
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('props') / 'ledger.db'}"
    migrate_sync(url)
    return url


def _events(cid: str, cs: list[Decimal], rate: Decimal, cap: Decimal | None) -> list[Pending]:
    return [
        Pending(cid, f"req_{i}", T0 + dt.timedelta(seconds=i), c, money.mul(c, rate), cap) for i, c in enumerate(cs)
    ]


def _run(url: str, batches: list[list[Pending]], cid: str):
    async def go():
        engine = create_engine(url)
        try:
            ledger = Ledger(engine)
            for b in batches:
                await ledger.apply(b)
            return (await ledger.totals([cid])).get(cid), await ledger.accruals(cid)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _chunks(items, sizes):
    out, i = [], 0
    for s in sizes:
        if i >= len(items):
            break
        out.append(items[i : i + s])
        i += s
    if i < len(items):
        out.append(items[i:])
    return out


@SETTINGS
@given(cs=costs, rate=rates, cap=caps, sizes=st.lists(st.integers(1, 10), max_size=10))
def test_total_is_exactly_min_of_cap_and_requested_and_never_above_cap(db_url, cs, rate, cap, sizes):
    cid = uuid.uuid4().hex
    events = _events(cid, cs, rate, cap)
    total, rows = _run(db_url, _chunks(events, sizes), cid)
    exact = sum((e.requested for e in events), Decimal(0))  # Python Decimal at 28 digits is exact here
    expected = exact if cap is None else min(cap, exact)
    assert total.accrued == expected
    assert cap is None or total.accrued <= cap
    assert all(Decimal(0) <= r.amount <= r.requested for r in rows)
    assert money.total(r.amount for r in rows) == total.accrued  # rows and running total agree exactly
    assert money.cents(total.accrued) == expected.quantize(Decimal("0.01"))  # reported cents: half-even of exact


@SETTINGS
@given(cs=costs, rate=rates, cap=caps, data=st.data())
def test_replay_of_any_subset_in_any_order_changes_nothing(db_url, cs, rate, cap, data):
    cid = uuid.uuid4().hex
    events = _events(cid, cs, rate, cap)
    first, _ = _run(db_url, [events], cid)
    replay = data.draw(st.lists(st.sampled_from(events), max_size=40))
    again, rows = _run(db_url, [replay, events[::-1]], cid)
    assert (again.accrued, again.requested, again.calls) == (first.accrued, first.requested, first.calls)
    assert len(rows) == len(events)


@SETTINGS
@given(cs=costs, rate=rates, cap=caps, data=st.data())
def test_order_of_arrival_does_not_change_the_total(db_url, cs, rate, cap, data):
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    ev_a = _events(a, cs, rate, cap)
    shuffled = data.draw(st.permutations(_events(b, cs, rate, cap)))
    ta, _ = _run(db_url, [ev_a], a)
    tb, _ = _run(db_url, [list(shuffled)], b)
    assert ta.accrued == tb.accrued
    assert ta.requested == tb.requested


@SETTINGS
@given(parts=st.lists(st.decimals(min_value="0.001", max_value="0.009", places=3), min_size=2, max_size=50))
def test_report_rounds_the_exact_sum_not_the_sum_of_rounded_parts(db_url, parts):
    """Many sub-cent accruals: the reported cents are the exact total rounded once (half-even)."""
    cid = uuid.uuid4().hex
    events = [Pending(cid, f"r{i}", T0, p, p, None) for i, p in enumerate(parts)]
    total, _ = _run(db_url, [events], cid)
    assert total.accrued == sum(parts, Decimal(0))
    assert money.cents(total.accrued) == sum(parts, Decimal(0)).quantize(Decimal("0.01"), rounding="ROUND_HALF_EVEN")


def test_half_even_rounding_examples():
    assert money.cents(Decimal("0.125")) == Decimal("0.12")
    assert money.cents(Decimal("0.135")) == Decimal("0.14")
    assert money.cents(Decimal("29.014995")) == Decimal("29.01")
