"""The scenario planner's chart: what a finance reader looks for, drawn where nothing covers it.

The headline under the title states the money (a commitment's projected shortfall, the date a
cap is reached and what it holds back); the chart shows the ledger up to today, a "today" line,
the projection from there, the limit, and a bracket labelled with the shortfall at the last day.
Axes are money in the contract's currency. The legend sits below the plot, never over a line,
and the right margin is kept free for the labels. Drawn with matplotlib's Agg backend; SVG keeps
its text as text (searchable, and what the tests read).
"""

from __future__ import annotations

import datetime as dt
import textwrap

from .scenario import Projection, money_text

UTC = dt.UTC
ACTUAL, LIMIT, PLAN, TODAY = "#1f77b4", "#d62728", "#2ca02c", "#555555"
_MARGIN = 0.22  # right margin, as a share of the time span: room for the crossing and shortfall labels


def history_steps(p: Projection) -> tuple[list[dt.datetime], list[float]]:
    """The ledger's cumulative total as steps: each day's accruals land at the end of that day, but
    never after `now`, so the actual line ends exactly where the projection begins."""
    if not p.history:
        return [], []
    xs = [dt.datetime.combine(p.history[0][0], dt.time(), UTC)]
    ys = [0.0]
    for day, total in p.history:
        if dt.datetime.combine(day, dt.time(), UTC) >= p.now:
            break  # accruals after "now" (a report computed --at an earlier time)
        xs.append(min(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), UTC), p.now))
        ys.append(total)
    if xs[-1] < p.now:
        xs.append(p.now)
        ys.append(ys[-1])
    return xs, ys


def render(p: Projection, paths: list[str], planned: bool = True) -> None:
    """Draw the projection to each path (format from the extension: .png or .svg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.ticker import FuncFormatter

    matplotlib.rcParams["svg.fonttype"] = "none"  # keep text as text in SVG (searchable, testable)
    matplotlib.rcParams["text.parse_math"] = False  # a "$" in a label is a dollar, not mathtext
    fig, ax = plt.subplots(figsize=(10, 6), dpi=100, layout="constrained")
    try:
        what = "cap" if p.kind == "revenue_share" else "commitment"
        hx, hy = history_steps(p)
        if hx:
            ax.step(hx, hy, where="post", color=ACTUAL, label="actual (ledger)")  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes, its unit converters do (matplotlib#25676)
        n = 200
        span = (p.until - p.now).total_seconds()
        xs = [p.now + dt.timedelta(seconds=span * i / n) for i in range(n + 1)]
        ys = [p.value_at(x) for x in xs]
        ax.plot(xs, ys, "--", color=ACTUAL, label=f"projected ({p.growth}, {p.growth_rate:+.1%} / 30 days)")  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes, its unit converters do (matplotlib#25676)
        if p.limit is not None:
            ax.axhline(p.limit, color=LIMIT, linestyle=":", label=f"{what} {money_text(p.limit, p.currency)}")
        if p.kind == "commitment" and planned and p.start and p.end and p.limit is not None:
            ax.plot([p.start, p.end], [0.0, p.limit], color=PLAN, alpha=0.7, label="planned burn (linear)")  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes, its unit converters do (matplotlib#25676)

        left = min([x for x in (p.start, hx[0] if hx else None, p.now) if x is not None])
        right = p.until + (p.until - left) * _MARGIN
        top = max([p.limit or 0.0, *ys, *hy]) * 1.15 or 1.0
        ax.set_xlim(left, right)  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes, its unit converters do (matplotlib#25676)
        ax.set_xticks(AutoDateLocator(maxticks=8).tick_values(left, p.until))  # no dates after the last day
        ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
        ax.set_ylim(0, top)

        # Today: where the ledger ends and the projection starts.
        ax.axvline(p.now, color=TODAY, linestyle="-.", linewidth=1)  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes, its unit converters do (matplotlib#25676)
        ax.annotate(
            f"today {p.now.date().isoformat()}",
            xy=(p.now, 0.98),
            xycoords=("data", "axes fraction"),
            xytext=(4, 0),
            textcoords="offset points",
            va="top",
            color=TODAY,
            fontsize=9,
        )

        if p.crossing is not None and p.limit is not None:  # a crossing is always of a limit
            ax.axvline(p.crossing, color=LIMIT, alpha=0.6)  # type: ignore[arg-type]  # matplotlib's stubs take no datetimes, its unit converters do (matplotlib#25676)
            # Where nothing is drawn: below the flat capped line after a cap; above the limit before a
            # commitment's crossing (the planned burn runs below the limit to its end).
            below = p.kind == "revenue_share"
            ax.annotate(
                f"{p.label}\n{money_text(p.limit, p.currency)}",
                xy=(p.crossing, p.limit),
                xytext=(8, -30) if below else (-8, 20),
                textcoords="offset points",
                color=LIMIT,
                va="top" if below else "bottom",
                ha="left" if below else "right",
                arrowprops={"arrowstyle": "->", "color": LIMIT},
            )
        elif p.limit is not None:
            _bracket(ax, p, p.limit)

        fig.suptitle(
            f"{p.contract_id}: {'accruals' if p.kind == 'revenue_share' else 'commitment burn-down'} to {p.last_day}"
        )
        ax.set_title(
            textwrap.fill(p.headline, 96),
            color=LIMIT if p.limit is not None else "black",
            fontsize=10,
            fontweight="bold",
        )
        decimals = 2 if top < 100 else 0
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.{decimals}f} {p.currency}"))
        ax.set_ylabel(f"{'accrued' if p.kind == 'revenue_share' else 'burned'} ({p.currency})")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncol=4, frameon=False)
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
        for path in paths:
            fig.savefig(path, format=path.rsplit(".", 1)[-1].lower())
    finally:
        plt.close(fig)


def _bracket(ax, p: Projection, limit: float) -> None:
    """A double arrow at the last day from the projected total up to the limit, labelled with the gap."""
    ax.annotate(
        "",
        xy=(p.until, limit),
        xytext=(p.until, p.at_until),
        arrowprops={"arrowstyle": "<->", "color": LIMIT, "shrinkA": 0, "shrinkB": 0},
    )
    name = "shortfall" if p.kind == "commitment" else "below the cap"
    ax.annotate(
        f"{name}\n{money_text(p.shortfall, p.currency)}",
        xy=(p.until, (limit + p.at_until) / 2),
        xytext=(6, 0),
        textcoords="offset points",
        va="center",
        color=LIMIT,
        fontweight="bold",
    )
