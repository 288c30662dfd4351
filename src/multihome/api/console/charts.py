"""Chart.js configurations, as data: the console's pages embed them as JSON and the packaged Chart.js
draws them (static/console.js only hands each one to `new Chart`). Nothing here draws.

A config never carries a function (JSON cannot); the one formatting need, dates on a linear time axis,
is named (`"ticks": {"format": "date"}`) and applied by console.js.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

# A fixed, colour-blind-friendly palette (Okabe-Ito), so the same series keeps its colour across reloads.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
_DAY_MS = 86_400_000


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _options(title: str, *, stacked: bool = False, y_title: str | None = None) -> dict[str, Any]:
    axis: dict[str, Any] = {"stacked": stacked, "beginAtZero": True}
    if y_title:
        axis["title"] = {"display": True, "text": y_title}
    return {
        "animation": False,
        "maintainAspectRatio": False,
        "plugins": {"title": {"display": True, "text": title}, "legend": {"position": "bottom"}},
        "scales": {"x": {"stacked": stacked}, "y": axis},
    }


def buckets(start: dt.datetime, end: dt.datetime, interval: str, most: int = 400) -> list[str]:
    """Every bucket from start to end, as the usage summary names them (metering/summary.py), so hours or
    days without calls are on the axis too."""
    step = dt.timedelta(hours=1) if interval == "hour" else dt.timedelta(days=1)
    at = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if interval == "day":
        at = at.replace(hour=0)
    out: list[str] = []
    while at <= end and len(out) < most:
        out.append(at.strftime("%Y-%m-%dT%H:00:00Z"))
        at += step
    return out


def stacked(
    rows: Sequence[dict[str, Any]],
    series_key: str,
    value_key: str,
    title: str,
    money: bool = False,
    axis: Sequence[str] = (),
    interval: str = "hour",
) -> dict[str, Any]:
    """Bars per time bucket (`bucket`; `axis`: every bucket to show), one stacked series per value of `series_key`."""
    shown = sorted({*axis, *(r["bucket"] for r in rows)})
    names = sorted({str(r[series_key]) for r in rows})
    cells: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["bucket"], str(r[series_key]))
        value = float(Decimal(r[value_key])) if money else float(r[value_key])
        cells[key] = cells.get(key, 0.0) + value
    datasets = [
        {
            "label": name,
            "data": [round(cells.get((b, name), 0.0), 6) for b in shown],
            "backgroundColor": _colour(i),
        }
        for i, name in enumerate(names)
    ]
    # Hours as HH:00, with the date at midnight; days as dates.
    labels = [b[:10] if interval == "day" else (b[5:10] if b[11:13] == "00" else b[11:16]) for b in shown]
    return {"type": "bar", "data": {"labels": labels, "datasets": datasets}, "options": _options(title, stacked=True)}


def bars(labels: Sequence[str], values: Sequence[float], title: str) -> dict[str, Any]:
    data = {"labels": list(labels), "datasets": [{"label": title, "data": list(values), "backgroundColor": PALETTE[0]}]}
    options = _options(title)
    options["plugins"]["legend"] = {"display": False}
    return {"type": "bar", "data": data, "options": options}


def line(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], y_title: str) -> dict[str, Any]:
    datasets = [
        {
            "label": name,
            "data": list(values),
            "borderColor": _colour(i),
            "backgroundColor": _colour(i),
            "pointRadius": 0,
            "spanGaps": False,
            **({"borderDash": [6, 4]} if i > 0 else {}),
        }
        for i, (name, values) in enumerate(series)
    ]
    return {
        "type": "line",
        "data": {"labels": list(labels), "datasets": datasets},
        "options": _options("", y_title=y_title),
    }


def timeline(items: Sequence[tuple[str, str, str, bool]], today: dt.date) -> dict[str, Any]:
    """Horizontal bars from start to end (ISO dates, inclusive) per item; revoked ones greyed; a bar for today."""

    def ms(day: dt.date) -> int:
        return (day - dt.date(1970, 1, 1)).days * _DAY_MS

    data = [[ms(dt.date.fromisoformat(s)), ms(dt.date.fromisoformat(e)) + _DAY_MS] for _, s, e, _ in items]
    colours = ["#bbbbbb" if revoked else _colour(i) for i, (_, _, _, revoked) in enumerate(items)]
    t = ms(today)
    options = _options("entitlements (today: the thin bar)")
    options["indexAxis"] = "y"
    options["plugins"]["legend"] = {"display": False}
    lo = min([t, *(d[0] for d in data)]) - 7 * _DAY_MS
    hi = max([t, *(d[1] for d in data)]) + 7 * _DAY_MS
    options["scales"] = {
        "x": {"type": "linear", "min": lo, "max": hi, "ticks": {"format": "date"}},
        "y": {"stacked": True},
    }
    datasets = [
        {"label": "term", "data": data, "backgroundColor": colours, "barPercentage": 0.6},
        {
            "label": "today",
            "data": [[t, t + _DAY_MS // 4]] * len(items),
            "backgroundColor": "#d62728",
            "barPercentage": 1.0,
            "grouped": False,
        },
    ]
    return {
        "type": "bar",
        "data": {"labels": [label for label, _, _, _ in items], "datasets": datasets},
        "options": options,
    }
