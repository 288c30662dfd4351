"""Time math: UTC calendar budget periods, fixed one-minute rate windows, Go-style durations."""

from __future__ import annotations

import datetime as dt
import math

UTC = dt.UTC
WINDOW_MS = 60_000  # rate limits count per fixed UTC minute


def window(now_ms: int) -> tuple[int, int]:
    """(window id, window end in ms) of the fixed minute containing `now_ms`."""
    wid = now_ms // WINDOW_MS
    return wid, (wid + 1) * WINDOW_MS


class Period:
    """The budget bucket a moment falls in: its key suffix, start and end (None for `total`)."""

    __slots__ = ("bucket", "start", "end", "end_ms", "expire_ms")

    def __init__(self, bucket: str, start: dt.datetime | None, end: dt.datetime | None) -> None:
        self.bucket, self.start, self.end = bucket, start, end
        self.end_ms = 0 if end is None else int(end.timestamp() * 1000)
        # A period's counter expires a day after the period ends (a total's never does).
        self.expire_ms = self.end_ms + 86_400_000 if self.end_ms else 0


def period(kind: str, now: float) -> Period:
    if kind == "total":
        return Period("all", None, None)
    day = dt.datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "day":
        return Period("d" + day.strftime("%Y%m%d"), day, day + dt.timedelta(days=1))
    start = day.replace(day=1)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return Period("m" + start.strftime("%Y%m"), start, end)


class Periods:
    """`period()` cached per UTC day: the hot path computes calendar math once a day, not per call."""

    def __init__(self) -> None:
        self._day = -1
        self._cache: dict[str, Period] = {}

    def at(self, now: float) -> dict[str, Period]:
        """Every kind's period at `now`: {"day": ..., "month": ..., "total": ...}."""
        day = int(now // 86400)
        if day != self._day:
            self._day, self._cache = day, {k: period(k, now) for k in ("day", "month", "total")}
        return self._cache

    def get(self, kind: str, now: float) -> Period:
        return self.at(now)[kind]


# A Go duration's whole seconds within a window, and its fraction of a second by millisecond with the
# unit, trailing zeros dropped: "s", ".5s", ".05s", ".123s".
_SECONDS = [b"%d" % s for s in range(WINDOW_MS // 1000)]
_MILLIS = [b"s"] + [f".{m:03d}".rstrip("0").encode() + b"s" for m in range(1, 1000)]


def window_reset(ms: int) -> bytes:
    """`go_duration(ms)` as bytes for a reset within one rate window (0 <= ms <= 60 s), the value of
    every admission's x-ratelimit-reset-* headers: two table look-ups, not go_duration's general math."""
    if 1000 <= ms < WINDOW_MS:
        return _SECONDS[ms // 1000] + _MILLIS[ms % 1000]
    if ms < 1000:
        return b"%dms" % ms if ms > 0 else b"0s"
    return go_duration(ms).encode()


def go_duration(ms: float) -> str:
    """A duration as Go's time.Duration.String() writes it, to the millisecond: 12ms, 1s, 1.5s, 6m0s, 1h0m0s."""
    ms = max(0, math.ceil(ms))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    sec = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") if millis else str(seconds)
    if hours:
        return f"{hours}h{minutes}m{sec}s"
    if minutes:
        return f"{minutes}m{sec}s"
    return f"{sec}s"
