"""A usage row's stamps as text (metering/row.py): the same text as formatting the datetime the
stamps were made from before, for any time (a property), and rows of mappings in column order."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from multihome.metering.row import COLUMNS, as_dict, as_row, stamp_of, stamp_pairs, stamps
from multihome.metering.tables import usage_calls
from multihome.storage.base import sqlite_stamp

STAMPS = stamps()  # one for the whole run, as Metering keeps one: its per-second cache is exercised
PAIRS = stamp_pairs()


@given(st.floats(min_value=-(2**32), max_value=2**35, allow_nan=False, allow_infinity=False))
def test_stamps_are_the_datetime_text_of_any_time(t):
    assert STAMPS(t) == sqlite_stamp(dt.datetime.fromtimestamp(t, dt.UTC))


@given(st.integers(min_value=1_700_000_000, max_value=1_900_000_000), st.integers(0, 999_999))
def test_stamps_round_halves_to_even_as_datetime_does(sec, us):
    for t in (sec + us / 1e6, sec + (us + 0.5) / 1e6, sec + (us + 0.4999999) / 1e6):
        assert STAMPS(t) == stamp_of(t) == sqlite_stamp(dt.datetime.fromtimestamp(t, dt.UTC))


@given(
    st.floats(min_value=-(2**32), max_value=2**35, allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=2, allow_nan=False) | st.floats(min_value=-(2**32), max_value=2**35),
    st.booleans(),
)
def test_stamp_pairs_are_both_stamps_for_any_two_times(started, then, elapsed):
    """A call's finish `then` seconds after its start (mostly within its second, or across one), or any time."""
    finished = started + then if elapsed else then
    assert PAIRS(started, finished) == (stamp_of(started), stamp_of(finished))


def test_stamp_pairs_of_whole_seconds_and_signed_zeros():
    for started, finished in ((0.0, -0.0), (-0.0, 0.0), (-0.0, -0.0), (5.0, 5.0), (5.0, 6.0), (1.5, 1.0)):
        assert PAIRS(started, finished) == (stamp_of(started), stamp_of(finished)), (started, finished)


@given(st.integers(min_value=1_700_000_000, max_value=1_900_000_000), st.integers(0, 999_999), st.integers(0, 999_999))
def test_stamp_pairs_round_halves_to_even_within_a_second(sec, us, later):
    for t in (sec + us / 1e6, sec + (us + 0.5) / 1e6, sec + (us + 0.4999999) / 1e6):
        for f in (t, sec + later / 1e6, sec + (later + 0.5) / 1e6):
            assert PAIRS(t, f) == (stamp_of(t), stamp_of(f))


def test_rows_are_in_the_tables_column_order():
    assert COLUMNS == tuple(c.name for c in usage_calls.columns)
    at = dt.datetime(2026, 12, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    fields = {c: f"v-{c}" for c in COLUMNS} | {"started_at": at, "finished_at": at.timestamp()}
    fields |= {"estimated": True, "over_budget": False}
    del fields["reasoning_tokens"]  # a row spooled before migration 0018
    row = as_row(fields)
    assert as_dict(row) == fields | {
        "started_at": "2026-12-03 04:05:06.000007",
        "finished_at": "2026-12-03 04:05:06.000007",
        "reasoning_tokens": 0,
        "estimated": 1,  # flags as SQLite stores them
        "over_budget": 0,
    }
