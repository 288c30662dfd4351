"""Window and calendar math, and OpenAI's Go-style reset durations."""

from __future__ import annotations

import datetime as dt

from multihome.metering.periods import go_duration, period, window, window_reset


def test_go_durations_match_what_openai_sends():
    assert go_duration(12) == "12ms"
    assert go_duration(1000) == "1s"
    assert go_duration(1500) == "1.5s"
    assert go_duration(6 * 60_000) == "6m0s"
    assert go_duration(59_999) == "59.999s"
    assert go_duration(61_020) == "1m1.02s"
    assert go_duration(3_600_000) == "1h0m0s"
    assert go_duration(0) == "0s" and go_duration(0.2) == "1ms"


def test_a_windows_reset_is_its_go_duration_at_every_millisecond():
    assert [window_reset(ms) for ms in range(60_001)] == [go_duration(ms).encode() for ms in range(60_001)]


def test_fixed_minute_windows():
    assert window(0) == (0, 60_000)
    assert window(59_999) == (0, 60_000)
    assert window(60_000) == (1, 120_000)


def test_budget_periods_are_utc_calendar_days_and_months():
    ts = dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    day, month, total = period("day", ts), period("month", ts), period("total", ts)
    assert day.bucket == "d20251231" and day.end == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert month.bucket == "m202512" and month.start.day == 1 and month.end.year == 2026 and month.end.month == 1
    assert total.bucket == "all" and total.end is None and total.end_ms == 0
    assert period("day", ts + 1).bucket == "d20260101"
