"""What a retrying background loop logs while what it needs is down: one line per outage, not one per try.

A poller meets an outage at every round (twice a second for the job queue): a line each buried the rest of the
log. `OutageLog` says a WARNING when the failures start (the error's class and first line), a reminder at most
once per `remind_s` with how long and how many failures, and an INFO line once the loop succeeds again.
`first_line` is the error's words for a log line or a status field: the first line only (SQLAlchemy puts the
statement and its parameters on the lines after), the class alone for a message-less error (a timeout).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

_WORDS = 200  # a driver's first line is short; a longer one is cut, not carried whole into every line


def first_line(exc: BaseException) -> str:
    """`exc`'s class and the first line of its message, from the error it was raised from when it wraps one
    (SQLAlchemy's wraps the driver's, whose words say it best); the class alone when there are no words."""
    seen = exc
    for _ in range(8):  # SQLAlchemy wraps the driver's error, sometimes twice
        if seen.__cause__ is None:
            break
        seen = seen.__cause__
    words = str(seen).partition("\n")[0].strip()
    name = type(seen).__name__
    return f"{name}: {words[:_WORDS]}" if words else name


class OutageLog:
    """The log lines of one loop's failures: `failed(exc)` at each failed try, `ok()` at each success."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        recovered: str | None = None,
        remind_s: float = 60.0,
        quiet_s: float = 0.0,
        consequence: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log, self.what = log, what
        self._recovered = recovered or f"{what}: over"
        self.remind_s = remind_s
        self.quiet_s = quiet_s  # failures shorter than this are not news (a store still starting)
        self._consequence = consequence
        self._clock = clock
        self.failing_since: float | None = None  # monotonic, while failing
        self.failures = 0  # in the current outage
        self.last_error = ""  # first_line of the latest failure, kept after a recovery (a status page shows it)
        self._warned: float | None = None  # when the last warning of this outage was said

    def failed(self, exc: BaseException, *, traceback: bool = False) -> None:
        """`traceback`: put the traceback in the outage's first warning (an error that is not an outage, a bug,
        is worth its lines once; the reminders never carry one)."""
        now = self._clock()
        self.failures += 1
        self.last_error = first_line(exc)
        if self.failing_since is None:
            self.failing_since = now
        if self._warned is None:
            if now - self.failing_since >= self.quiet_s:
                self._warned = now
                self._log.warning(
                    "%s (%s); retrying%s",
                    self.what,
                    self.last_error,
                    self._consequence,
                    exc_info=exc if traceback else None,
                )
        elif now - self._warned >= self.remind_s:
            self._warned = now
            self._log.warning(
                "%s for %.0f s, %d failures (%s); still retrying%s",
                self.what,
                now - self.failing_since,
                self.failures,
                self.last_error,
                self._consequence,
            )

    def ok(self) -> None:
        if self.failing_since is None:
            return
        if self._warned is not None:  # an outage not said is not said over either
            self._log.info(
                "%s after %.0f s, %d failures", self._recovered, self._clock() - self.failing_since, self.failures
            )
        self.failing_since, self.failures, self._warned = None, 0, None
