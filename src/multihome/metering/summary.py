"""Usage summaries for the admin API: calls, errors, latency, tokens and cost per key/team/model
group/deployment, in total or per hour or day (the console's charts over time)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..schema.errors import echo
from ..storage import row_reads
from ..storage.errors import Invalid
from ..storage.row_reads import Listed
from .prices import NANOS, text
from .tables import usage_calls as u

GROUPS = {
    "key": u.c.key_id,
    "team": u.c.team_id,
    "model_group": u.c.model_group,
    "deployment": u.c.deployment,
    "tenant": u.c.tenant_id,
}
INTERVALS = ("hour", "day")
# An interval's bucket as ISO text, the same on both backends: SQLite stores times as ISO text
# ("2026-12-03 07:15:02.123456+00:00"), PostgreSQL as timestamptz (truncated, then formatted).
_SQLITE_BUCKET = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%dT00:00:00Z"}
_PG_BUCKET = {"hour": 'YYYY-MM-DD"T"HH24:00:00"Z"', "day": 'YYYY-MM-DD"T"00:00:00"Z"'}


# A row SQLite holds with a count that is not an integer, a latency that is not a number or a start that is
# not a time: left out and reported (storage/row_reads.py, misfits).
_BAD = row_reads.misfits(
    u,
    ints=("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_nanos", "status"),
    numbers=("latency_ms",),
    stamps=("started_at",),
)


class UsagePage(Listed[dict]):
    """One page of a summary: `next_page`, the `page` that reads the next (None: this is the last)."""

    next_page: str | None = None


def _order(engine: AsyncEngine, group_by: str, per_tenant: bool, interval: str | None) -> list[sa.ColumnElement]:
    """The columns a summary's entries are in order of, each the same for every call of an entry: its bucket, its
    tenant (across tenants, by team or key), its group (NULL, a call of no team, first), its currency. So a page's last entry says where the next
    page starts, in raw rows, whatever calls land meanwhile. The bucket is its expression, for WHERE (ORDER BY
    names it by its output name)."""
    col = GROUPS[group_by]
    out = [*([u.c.tenant_id] if per_tenant else []), sa.func.coalesce(col, ""), sa.case((col.is_(None), 0), else_=1)]
    out.append(u.c.currency)
    return [_bucket(engine, interval), *out] if interval is not None else out


def _page_token(values: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def _page_values(page: str, width: int) -> tuple[Any, ...]:
    """The order values a `next_page` holds (`_order`'s: text, then the no-group flag 0 or 1, then the currency);
    Invalid (a 400) for anything else. A value the database could not bind (an int for a text column, one past
    64 bits, a NUL or a lone surrogate in text) was a 500."""
    try:
        values = json.loads(base64.urlsafe_b64decode(page + "=" * (-len(page) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = None
    if (
        not isinstance(values, list)
        or len(values) != width
        or not all(_bindable_text(v) for v in values[:-2])
        or values[-2] not in (0, 1)
        or isinstance(values[-2], bool | float)
        or not _bindable_text(values[-1])
    ):
        raise Invalid(f"page: '{echo(page)}' is not a next_page of this summary", field="page")
    return tuple(values)


def _bindable_text(value: Any) -> bool:
    """A string both databases take as a bound text value: UTF-8 (no lone surrogate) and no NUL."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bucket(engine: AsyncEngine, interval: str) -> sa.ColumnElement:
    if engine.dialect.name == "sqlite":
        return sa.func.strftime(_SQLITE_BUCKET[interval], u.c.started_at)
    utc = sa.func.timezone("UTC", u.c.started_at)
    return sa.func.to_char(sa.func.date_trunc(interval, utc), _PG_BUCKET[interval])


async def usage_summary(
    engine: AsyncEngine,
    tenant: str | None,
    group_by: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    interval: str | None = None,
    limit: int | None = None,
    page: str | None = None,
) -> UsagePage:
    """One entry per (group, currency) in order of group. `tenant=None`: the whole organisation.
    With `interval` (hour, day): one entry per (bucket, group, currency), oldest bucket first, each
    with its `bucket` (the interval's start, ISO 8601 UTC). Teams and keys are their tenant's own (two
    tenants may both have a team `ml`): across the organisation they are grouped by tenant too, and each
    entry names its `tenant_id`. `limit` entries at most after the `page` (a `next_page`) given: a key a
    tenant made (100,000) is an entry each. `.unreadable`: stored rows left out (SQLite), at most
    MISFITS_SHOWN, on the first page."""
    col = GROUPS[group_by]
    per_tenant = tenant is None and group_by in ("team", "key")
    order = _order(engine, group_by, per_tenant, interval)
    keys = [col.label("group"), u.c.currency]
    if per_tenant:
        keys.append(u.c.tenant_id)
    if interval is not None:
        keys.insert(0, _bucket(engine, interval).label("bucket"))
    q = sa.select(
        *keys,
        # A call is a request a client made (its own row); an `unserved` row is an upstream answer or request
        # the call was billed for and did not serve (accounting/tracker.py `_unserved`): counted apart, its
        # tokens and cost in the totals. So three SDK give-ups are three calls with three unserved prompts.
        sa.func.sum(sa.case((u.c.outcome == "unserved", 0), else_=1)).label("calls"),
        sa.func.sum(sa.case((u.c.outcome == "unserved", 1), else_=0)).label("unserved"),
        sa.func.sum(u.c.prompt_tokens).label("prompt"),
        sa.func.sum(u.c.completion_tokens).label("completion"),
        sa.func.sum(u.c.cached_tokens).label("cached"),
        sa.func.sum(u.c.reasoning_tokens).label("reasoning"),
        sa.func.sum(u.c.cost_nanos).label("nanos"),
        sa.func.sum(sa.case((u.c.estimated, 1), else_=0)).label("estimated"),
        sa.func.sum(sa.case((u.c.outcome.not_in(("ok", "unserved")), 1), else_=0)).label("errors"),
        sa.func.avg(u.c.latency_ms).label("latency"),
        sa.func.max(u.c.latency_ms).label("latency_max"),
    ).group_by(col, u.c.currency)
    if per_tenant:
        q = q.group_by(u.c.tenant_id)
    if interval is not None:  # by its output name: the expression's bound format would differ on PostgreSQL
        q = q.group_by(sa.literal_column("bucket"))
    where = []
    if tenant is not None:
        where.append(u.c.tenant_id == tenant)
    if start is not None:
        where.append(u.c.started_at >= start)
    if end is not None:
        where.append(u.c.started_at < end)
    after = [] if page is None else [row_reads.past(tuple(order), _page_values(page, len(order)))]
    # The bucket by its output name in ORDER BY, as in GROUP BY; the others as themselves (grouped columns).
    grouped = order[1:] if interval is not None else order
    q = q.add_columns(*(c.label(f"o{i}") for i, c in enumerate(grouped)))
    q = q.where(*where, *after, *row_reads.fitting(engine, _BAD))
    q = q.order_by(*([sa.literal_column("bucket")] if interval is not None else []), *grouped)
    if limit is not None:
        q = q.limit(limit + 1)
    async with engine.connect() as conn:
        result = (await conn.execute(q)).all()
        unreadable = await row_reads.misfit_rows(conn, u, _BAD, where, "request_id") if page is None else ()
    more = limit is not None and len(result) > limit
    result = result[:limit] if more else result
    out = [
        {
            **({"bucket": r.bucket} if interval is not None else {}),
            **({"tenant_id": r.tenant_id} if per_tenant else {}),
            group_by: r.group,
            "currency": r.currency,
            "calls": int(r.calls or 0),  # requests clients made (one per request id the gateway saw)
            # upstream answers and requests the calls were billed for and did not serve (`<request id>.<n>`)
            "unserved": int(r.unserved or 0),
            "prompt_tokens": int(r.prompt or 0),
            "completion_tokens": int(r.completion or 0),
            "cached_tokens": int(r.cached or 0),
            "reasoning_tokens": int(r.reasoning or 0),  # part of completion_tokens, as OpenAI counts it
            "estimated_calls": int(r.estimated or 0),  # calls and unserved answers charged an estimate
            "errors": int(r.errors or 0),  # calls whose outcome was not ok (denied, declined, failed, cancelled)
            "latency_ms_avg": round(float(r.latency or 0.0), 1),
            "latency_ms_max": round(float(r.latency_max or 0.0), 1),
            # Exact: integer nano-units summed by the database, divided by 10^9 in Decimal.
            "cost": text(Decimal(int(r.nanos or 0)) / NANOS),
        }
        for r in result
    ]
    listed = UsagePage(out)
    listed.unreadable = unreadable
    if more:
        last = result[-1]._mapping
        values = [*([last["bucket"]] if interval is not None else []), *(last[f"o{i}"] for i in range(len(grouped)))]
        listed.next_page = _page_token(tuple(values))
    return listed
