"""A usage row in its final shape: a tuple in `usage_calls`' column order, its two stamps already the text
SQLAlchemy's SQLite DateTime stores ('2026-12-05 00:27:26.123456', naive UTC), its two flags (`estimated`,
`over_budget`) 0 or 1 as SQLite stores a boolean (sqlite3 binds an int as it is; a bool, like None, goes
through its adapter lookup, which raises and clears an AttributeError per value: ~3,500 instructions). `Metering.record` builds
it once; the spool copies it as one JSON array, the SQLite writer binds it as it is and PostgreSQL casts
the stamps' text in its INSERT (writer.py), so no row is turned into a dict, a datetime or a list of
columns again on its way to the database.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from ..storage.base import sqlite_stamp
from .tables import usage_calls

Row = tuple[Any, ...]

COLUMNS: tuple[str, ...] = (
    "request_id",
    "started_at",
    "finished_at",
    "tenant_id",
    "team_id",
    "key_id",
    "endpoint",
    "model_group",
    "deployment",
    "provider",
    "status",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated",
    "latency_ms",
    "cost",
    "cost_nanos",
    "currency",
    "price_version",
    "over_budget",
)
# Metering.record writes the tuple literally in this order: a column added to the table must be added here.
assert COLUMNS == tuple(c.name for c in usage_calls.columns), "usage_calls changed: update metering/row.py"
STAMPS = (COLUMNS.index("started_at"), COLUMNS.index("finished_at"))
FLAGS = (COLUMNS.index("estimated"), COLUMNS.index("over_budget"))
REQUEST_ID, FINISHED_AT, TENANT, MODEL_GROUP, PROVIDER = (
    COLUMNS.index(c) for c in ("request_id", "finished_at", "tenant_id", "model_group", "provider")
)
COST, CURRENCY, PRICE_VERSION = (COLUMNS.index(c) for c in ("cost", "currency", "price_version"))

# What a spool line decodes to (replay.py): a torn or foreign line fails here, never later.
SPOOL_TYPE = tuple[
    str, str, str, str, str | None, str, str, str, str | None, str | None, int, str,
    int, int, int, int, int, float, str, int, str, str, int,
]  # fmt: skip

_UTC = dt.UTC


def stamps() -> Callable[[float], str]:
    """A function: unix seconds -> the SQLite text of `datetime.fromtimestamp(t, UTC)` (its microseconds
    rounded the same way: half to even), the date and time of day formatted once per second, not per
    call. A closure, not an object's __call__: the interpreter calls it without a detour through C."""
    seconds: dict[float, str] = {}  # by the second (a whole float)

    def stamp(t: float) -> str:
        sec = t // 1.0
        us = (t - sec) * 1e6  # t - sec is exact; as CPython's fromtimestamp scales the fraction
        if us >= 999_999.5 or t < 0:
            return stamp_of(t)  # rounds up into the next second, or before 1970: the slow way
        head = seconds.get(sec)
        if head is None:
            if len(seconds) >= 64:  # calls that started long ago; bounded either way
                seconds.clear()
            head = seconds[sec] = time.strftime("%Y-%m-%d %H:%M:%S.", time.gmtime(sec))
        # %.0f rounds the exact double half to even, as fromtimestamp does (and round() would, for
        # ~40% more instructions with int() and an int format).
        return "%s%06.0f" % (head, us)  # noqa: UP031

    return stamp


def stamp_pairs() -> Callable[[float, float], tuple[str, str]]:
    """A function: (started, finished) unix seconds -> both stamps as `stamps()` makes them, in one call
    (a usage row has both). A call usually starts and finishes in the same second: then the date and
    time of day is looked up once, and the finish's fraction taken from the same whole second."""
    one = stamps()
    seconds: dict[float, str] = {}  # by the second (a whole float)

    def pair(started: float, finished: float) -> tuple[str, str]:
        sec = started // 1.0
        us = (started - sec) * 1e6
        fus = (finished - sec) * 1e6  # exact while finished is in [sec, sec + 1), as in `stamps`
        # Else the slow way: another second, rounding up into the next one, before 1970, or exactly on
        # the start's whole second (so a finish at -0.0 is never formatted as "-00000").
        if us >= 999_999.5 or started < 0 or not 0 < fus < 999_999.5:
            return one(started), one(finished)
        head = seconds.get(sec)
        if head is None:
            if len(seconds) >= 64:
                seconds.clear()
            head = seconds[sec] = time.strftime("%Y-%m-%d %H:%M:%S.", time.gmtime(sec))
        return "%s%06.0f" % (head, us), "%s%06.0f" % (head, fus)  # noqa: UP031

    return pair


def stamp_of(t: float) -> str:
    return sqlite_stamp(dt.datetime.fromtimestamp(t, _UTC))


def as_row(fields: dict[str, Any]) -> Row:
    """A row from a mapping of column names (a spool line written before rows were tuples, tests): the
    stamps as datetimes, unix seconds or their text; the flags as booleans or 0/1."""
    fields = {"reasoning_tokens": 0, **fields}  # absent from rows spooled before migration 0018
    values = [fields[c] for c in COLUMNS]
    for i in STAMPS:
        value = values[i]
        if isinstance(value, dt.datetime):
            values[i] = sqlite_stamp(value)
        elif isinstance(value, int | float):
            values[i] = stamp_of(value)
    for i in FLAGS:
        values[i] = 1 if values[i] else 0
    return tuple(values)


def as_dict(row: Row) -> dict[str, Any]:
    return dict(zip(COLUMNS, row))


def finished_at(row: Row) -> float:
    """Unix seconds of a row's `finished_at` text."""
    return dt.datetime.fromisoformat(row[FINISHED_AT]).replace(tzinfo=_UTC).timestamp()


__all__ = [
    "COLUMNS",
    "Row",
    "SPOOL_TYPE",
    "STAMPS",
    "as_dict",
    "as_row",
    "finished_at",
    "stamp_of",
    "stamp_pairs",
    "stamps",
]
