"""The admin API's reads of stored rows, checked as the snapshot checks them (storage/rows.py).

A row the gateway cannot read (a hand edit, a row another version wrote) must not turn a list or a
get into a 500, nor lock out the operator who has to mend it: a list returns the readable rows and
reports the others (`Listed.unreadable`); a get raises `UnreadableRow`, naming the problem and how
the admin API mends it; a revoke or delete of such a row still works (`one` lets it see the row).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from ..schema.errors import echo
from . import rows
from .errors import Invalid, NotFound, UnreadableRow
from .ids import minted_at
from .rows import Fields, Unreadable

T = TypeVar("T")
Build = Callable[[Any, Fields], T]

# How the admin API removes or replaces an unreadable row of each kind (docs/storage.md).
MENDS = {
    "tenant": "an org admin replaces its metadata (PATCH /admin/v1/tenants/{id} with metadata), or deletes the "
    "tenant; a creation time that cannot be read is fixed by SQL",
    "team": "delete the team (DELETE .../teams/{id}) and create it again, or fix the row by SQL",
    "api key": "revoke it (DELETE .../keys/{id}) and issue a new key",
    "policy": "replace its rules (PATCH .../policies/{id} with rules) or delete it",
    "entitlement": "an org admin revokes it (DELETE .../entitlements/{id}) and grants it again",
    "stateful pin": "an org admin revokes it (DELETE .../stateful-pins/{id}) and creates it again",
    "budget": "change its amount (PATCH .../budgets/{id}) or delete it",
    "token revocation": "delete it (DELETE /admin/v1/token-revocations/{id}) and create it again",
    "MCP server": "give the fields named anew (PATCH .../mcp-servers/{name}; headers: the whole set), or "
    "delete it (DELETE .../mcp-servers/{name}) and register it again",
    "stored response": "delete it (DELETE /v1/responses/{id}), or fix the row by SQL",
    "memory namespace": "a tenant-admin deletes it (DELETE /v1/memory/namespaces), or fix the row by SQL",
    "memory record": "delete it (DELETE /v1/memory/records/{id}), or fix the row by SQL",
    "conversation": "delete it (DELETE /v1/conversations/{id}), or fix the row by SQL",
    "conversation item": "delete it (DELETE /v1/conversations/{id}/items/{item_id}), or fix the row by SQL",
    # No call deletes or changes a stored agreement or the ledger (a record of money): fixed by SQL.
    "contract": "fix or delete its row of contract_agreements by SQL (docs/storage.md)",
    "contract ledger": "fix the row by SQL (docs/storage.md); the contract's reports answer once it can be read",
    "provider credential": "set it again (PUT /admin/v1/provider-credentials/{provider}) or delete it (DELETE "
    "/admin/v1/provider-credentials/{provider})",
    "agent run's job": "delete the run's response (DELETE /v1/responses/{id}; its job goes with it), or fix the row "
    "by SQL",
}


class Listed(list[T], Generic[T]):
    """The rows of a list that can be read; `unreadable` reports the others (never their values)."""

    unreadable: tuple[Unreadable, ...] = ()


async def read_all(conn: Any, query: sa.Select, table: sa.Table, build: Build[T]) -> Listed[T]:
    """The rows of `query` built by `build` (rows.key, rows.lenient(...)); the unreadable ones reported."""
    found, bad = await rows.fetch(conn, query, table)
    out: Listed[T] = Listed(rows.convert(str(table.name), found, build, bad))  # str: not SQLAlchemy's quoted_name
    out.unreadable = tuple(bad)
    return out


# What no stored text holds: PostgreSQL's text no NUL, UTF-8 no lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Page(Listed[T]):
    """One page of a list: `more` when rows follow its last (whose id is the next page's `after`)."""

    more: bool = False
    last: str | None = None  # the key (id) of its last row, readable or not


Order = sa.ColumnElement | tuple[sa.ColumnElement, ...]
# Where a cursor's row was in the list's order (the values of its `order` columns), read from its key: for a
# row deleted between two pages. None: its key does not say.
Place = Callable[[str], tuple[Any, ...] | None]


def by_creation(after: str) -> tuple[Any, ...] | None:
    """The place of a row in a list ordered by `created_at`, from its id (storage/ids.py `timed_id`)."""
    at = minted_at(after)
    return None if at is None else (at,)


def by_key(after: str) -> tuple[Any, ...]:
    """The place of a row in a list ordered by its key alone (a name): the key."""
    return (after,)


async def read_page(
    conn: Any,
    query: sa.Select,
    table: sa.Table,
    build: Build[T],
    order: Order,
    limit: int,
    after: str | None,
    key: sa.ColumnElement | None = None,
    marks: sa.Select | None = None,
    place: Place | None = None,
) -> Page[T]:
    """The rows of `query` in (`order`, `key`) order after the row whose `key` is `after`, `limit` at most.
    `key`: the column the API names a row by, unique in `query` (default the id). Their keys are read first
    (`page_keys`), then the rows, so a row that cannot be read takes its place in the page like any other."""
    key = table.c.id if key is None else key
    page, more = await page_keys(conn, query, order, limit, after, key, marks, place)
    out: Page[T] = Page()
    out.more = more
    if page:
        ordered = query.order_by(*_columns(order), key)
        listed = await read_all(conn, ordered.where(key.in_(page)), table, build)
        out.extend(listed)
        out.unreadable, out.last = listed.unreadable, page[-1]
    return out


async def page_keys(
    conn: Any,
    query: sa.Select,
    order: Order,
    limit: int,
    after: str | None,
    key: sa.ColumnElement,
    marks: sa.Select | None = None,
    place: Place | None = None,
) -> tuple[list[Any], bool]:
    """The `key`s of `query`'s rows in (`order`, `key`) order after the row whose `key` is `after`, `limit` at
    most, and whether more follow (one more is read). The cursor's place is its row's in `marks` (default
    `query`): the rows a cursor may name, for a list narrowed to live rows the same rows expired too, so that a
    walk goes on past a page whose last row expired since it was read; a row no longer there (deleted between
    two pages) is placed by `place` from its key; Invalid (a 400) when neither knows it."""
    columns = (*_columns(order), key)
    if after is not None:
        held = _UNSTORABLE.search(after) is None  # else no row's: not asked (PostgreSQL refuses the query)
        where = (query if marks is None else marks).with_only_columns(*columns[:-1]).where(key == after)
        mark = (await conn.execute(where)).first() if held else None
        if mark is None and held and place is not None:
            mark = place(after)
        if mark is None:
            raise Invalid(f"after: '{echo(after)}' is not the id of a row of this list")
        query = query.where(past(columns, (*mark, after)))
    ordered = query.order_by(*columns).with_only_columns(key).limit(limit + 1)
    keys = [r[0] for r in (await conn.execute(ordered)).all()]
    return keys[:limit], len(keys) > limit


def _columns(order: Order) -> tuple[sa.ColumnElement, ...]:
    return order if isinstance(order, tuple) else (order,)


def past(columns: tuple[sa.ColumnElement, ...], values: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    """The rows after `values` in the order of `columns` (each compared in turn: no row values, which not every
    SQLite build compares)."""
    after = columns[-1] > values[-1]
    for column, value in zip(reversed(columns[:-1]), reversed(values[:-1]), strict=True):
        after = sa.or_(column > value, sa.and_(column == value, after))
    return after


async def one(conn: Any, query: sa.Select, table: sa.Table, build: Build[T]) -> tuple[T | None, Unreadable | None]:
    """The row `query` selects (by id): (record, None), (None, what is wrong with it), or (None, None)."""
    listed = await read_all(conn, query, table, build)
    if listed:
        return listed[0], None
    return None, listed.unreadable[0] if listed.unreadable else None


async def read_one(
    conn: Any, query: sa.Select, table: sa.Table, build: Build[T], kind: str, id: str, tenant_id: str | None
) -> T:
    """The row `query` selects, or NotFound, or UnreadableRow naming what is wrong with it."""
    record, bad = await one(conn, query, table, build)
    if record is not None:
        return record
    if bad is not None:
        raise unreadable(kind, bad)
    raise NotFound(kind, id, tenant_id)


async def first(conn: Any, query: sa.Select, table: sa.Table) -> tuple[Any, Unreadable | None]:
    """The row `query` selects as the driver reads it: (row, None), (None, what is wrong with it), or
    (None, None). For reads whose caller builds the record itself (no `_fields`, no list: a get per call)."""
    found, bad = await rows.fetch(conn, query, table)
    return (found[0] if found else None), (bad[0] if bad else None)


def either(record: T | None, bad: Unreadable | None) -> T | Unreadable:
    """What `one` found: the record, else what is wrong with the row (it was found: one or the other)."""
    if record is not None:
        return record
    assert bad is not None
    return bad


def unreadable(kind: str, bad: Unreadable) -> UnreadableRow:
    return UnreadableRow(kind, bad.id, bad.problem, MENDS[kind])


async def is_live(conn: Any, table: sa.Table, where: Any) -> bool:
    """Whether the row is not revoked, asked in SQL: its `revoked_at` may be what cannot be decoded."""
    return bool(await conn.scalar(sa.select(table.c.revoked_at.is_(None)).where(*where)))


# Summaries (usage, what the stateful runtime holds) aggregate in SQL, where no row is read on its own:
# SQLite keeps any value in any column, so a row (a hand edit) whose count is not an integer or whose time is
# not a time would make a sum wrong or fail the whole answer (MIN/MAX of a text is that text). They are left
# out, with these conditions, and reported; PostgreSQL's column types refuse such values.
MISFITS_SHOWN = 100  # rows a summary names at most


def misfits(table: sa.Table, ints: tuple[str, ...] = (), numbers: tuple[str, ...] = (), stamps: tuple[str, ...] = ()):
    """Column name -> an SQLite condition true when the row's value is not of the column's type (NULL is)."""
    out: dict[str, Any] = {}
    for name in ints:
        out[name] = sa.func.typeof(table.c[name]).not_in(("integer", "null"))
    for name in numbers:
        out[name] = sa.func.typeof(table.c[name]).not_in(("integer", "real", "null"))
    for name in stamps:
        out[name] = sa.and_(table.c[name].is_not(None), sa.func.julianday(table.c[name]).is_(None))
    return out


def fitting(engine: Any, bad: dict[str, Any]) -> list:
    """The WHERE clause that leaves the misfits out (none on PostgreSQL)."""
    return [sa.not_(sa.or_(*bad.values()))] if engine.dialect.name == "sqlite" else []


async def misfit_rows(
    conn: Any, table: sa.Table, bad: dict[str, Any], where: list, id_col: str = "id"
) -> tuple[Unreadable, ...]:
    """The rows `where` selects that `fitting` leaves out (SQLite only; at most MISFITS_SHOWN), by id and
    the fields that are wrong, never a value."""
    if conn.dialect.name != "sqlite":
        return ()
    flags = [cond.label(name) for name, cond in bad.items()]
    key = table.c[id_col]
    q = sa.select(key, table.c.tenant_id, *flags).where(*where, sa.or_(*bad.values()))
    found = (await conn.execute(q.order_by(key).limit(MISFITS_SHOWN))).all()
    out = []
    for row_id, tenant_id, *flag in found:
        wrong = ", ".join(name for name, f in zip(bad, flag) if f)
        out.append(Unreadable(str(table.name), str(row_id), tenant_id, f"not of its column's type: {wrong}"))
    return tuple(out)
