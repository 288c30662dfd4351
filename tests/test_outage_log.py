"""One warning per outage, a reminder a minute, one INFO line at its end; an error's words without a crash."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from multihome.outage_log import OutageLog, first_line

log = logging.getLogger("tests.outage_log")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refused() -> Exception:
    driver = ConnectionRefusedError(111, "Connection refused")
    try:
        raise sa.exc.OperationalError("UPDATE t SET a=:a", {"a": "s3cret"}, driver) from driver
    except sa.exc.OperationalError as exc:
        return exc


def test_a_long_outage_is_one_warning_a_reminder_a_minute_and_one_recovery_line(caplog):
    clock = Clock()
    failing = OutageLog(log, "store unreachable", recovered="store reachable again", clock=clock)
    caplog.set_level(logging.INFO, logger=log.name)
    for _ in range(280):  # 70 s at a poll every 0.25 s
        failing.failed(_refused())
        clock.now += 0.25
    failing.ok()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "INFO"], lines
    assert lines[0][1] == "store unreachable (ConnectionRefusedError: [Errno 111] Connection refused); retrying"
    assert lines[1][1].startswith("store unreachable for 60 s, 241 failures (ConnectionRefusedError"), lines[1]
    assert lines[2][1] == "store reachable again after 70 s, 280 failures"
    assert "s3cret" not in caplog.text and "UPDATE" not in caplog.text
    caplog.clear()
    failing.ok()  # no outage: nothing to say
    failing.failed(TimeoutError())  # the next outage is said again
    assert [r.getMessage() for r in caplog.records] == ["store unreachable (TimeoutError); retrying"]


def test_a_failure_shorter_than_the_quiet_time_is_not_said(caplog):
    clock = Clock()
    failing = OutageLog(log, "registry not written", quiet_s=10, clock=clock)
    failing.failed(TimeoutError())
    clock.now += 5
    failing.ok()
    assert caplog.records == []
    failing.failed(TimeoutError())
    clock.now += 10
    failing.failed(TimeoutError())
    assert [r.getMessage() for r in caplog.records] == ["registry not written (TimeoutError); retrying"]


def test_a_bug_s_first_warning_carries_its_traceback_and_its_reminders_do_not(caplog):
    clock = Clock()
    failing = OutageLog(log, "sweep failed", clock=clock)
    for _ in range(3):
        failing.failed(KeyError("x"), traceback=True)
        clock.now += 61
    assert [bool(r.exc_info) for r in caplog.records] == [True, False, False]


@pytest.mark.parametrize(
    "exc, words",
    [
        (TimeoutError(), "TimeoutError"),  # a timeout has no message: its class alone, not an IndexError
        (ValueError(""), "ValueError"),
        (ValueError("\n"), "ValueError"),
        (ValueError("first\nsecond"), "ValueError: first"),
        (_refused(), "ConnectionRefusedError: [Errno 111] Connection refused"),  # the driver's, not the statement
        (ValueError("x" * 500), "ValueError: " + "x" * 200),
    ],
)
def test_first_line_names_the_error_and_survives_an_empty_message(exc, words):
    assert first_line(exc) == words
