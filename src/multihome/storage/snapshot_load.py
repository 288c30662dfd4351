"""Reading the hot path's `Snapshot` from the store: every row at first, then only the rows that changed.

A trigger on each table the snapshot holds records the id of every row written or deleted in
`snapshot_changes`, stamped with the version its transaction bumped (storage/base.py `_write`; the
stamps are in commit order, as the counter's row lock is held from the bump to the commit). A load
given the previous snapshot reads, in one consistent transaction, the version, the ids changed since
the previous one's, and only those rows: a row still there replaces what was held, one gone (deleted,
revoked, expired) is dropped. Rows no transaction stamped yet (a write that bumped nothing, a hand
edit) are read at every load until one does. Everything is read again when there is no previous
snapshot, when the changes it needs were pruned (`state_version.changes_from`), when the version went
back, or, per table, when more of its rows changed than `MAX_IDS` and than it held.

What is held per table (`Held`) is copied on change, never mutated: a snapshot handed out stays as it
was, and a table that did not change is the same object in the next snapshot (its records too, so the
policy engine's equality checks find them at once). Unreadable rows (storage/rows.py) are held and
dropped by id like the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import rows
from .base import utcnow
from .console_sessions import live_session_ends, session_end
from .pins import pin_from_row
from .policies import policy_from_row
from .records import KeyRecord
from .revocations import live_revocations
from .snapshot import Snapshot
from .tables import (
    api_keys,
    budgets,
    console_session_ends,
    entitlements,
    policies,
    snapshot_changes,
    state_version,
    stateful_pins,
    teams,
    tenants,
    token_revocations,
)

if TYPE_CHECKING:
    from .store import Store

# More rows of one table changed than this, and than the table held: the whole table is read instead.
MAX_IDS = 5_000
CHUNK = 500  # ids per IN list (SQLite binds at most 32,766 values in one statement)


def _by_creation(r: Any) -> tuple[Any, ...]:
    return (r.created_at, str(r.id))


def _by_group(r: Any) -> tuple[Any, ...]:
    return (r.model_group, r.starts_on, str(r.id))


@dataclass(frozen=True)
class Kind:
    """One table the snapshot holds: how its rows are selected (`live`), built and ordered."""

    table: sa.Table
    build: Callable[[Any, rows.Fields], Any]
    live: Callable[[datetime], list[Any]] = lambda now: []
    order: Callable[[Any], tuple[Any, ...]] | None = None
    expires: bool = False  # rows leave the snapshot by time (expires_at) too

    @property
    def name(self) -> str:
        return str(self.table.name)  # not SQLAlchemy's quoted_name: reported in Unreadable


def _not_revoked(table: sa.Table) -> Callable[[datetime], list[Any]]:
    return lambda now: [table.c.revoked_at.is_(None)]


# In the order the unreadable rows are reported. Console session ends last: unreadable, they refuse no
# tenant's calls (they restrict console sessions only, docs/console.md "Ending sessions").
KINDS = (
    Kind(tenants, rows.tenant),
    Kind(teams, rows.team),
    Kind(api_keys, rows.key, _not_revoked(api_keys)),
    # Policies and pins as stored: api/policy_gate.py refuses the tenant of one it cannot read.
    Kind(policies, rows.lenient(policy_from_row), order=_by_creation),
    Kind(entitlements, rows.entitlement, _not_revoked(entitlements), _by_group),
    Kind(stateful_pins, rows.lenient(pin_from_row), _not_revoked(stateful_pins), _by_creation),
    Kind(budgets, rows.budget, order=_by_creation),
    Kind(token_revocations, rows.revocation, lambda now: [live_revocations(now)], _by_creation, expires=True),
    Kind(console_session_ends, session_end, lambda now: [live_session_ends(now)], expires=True),
)
SESSION_ENDS = str(console_session_ends.name)


class Table:
    """What a snapshot holds of one table: its readable records and its unreadable rows, each by id, and what
    the snapshot shows of them (`shown`: a dict or tuple, made once per change)."""

    __slots__ = ("bad", "good", "shown")

    def __init__(self, good: dict[str, Any], bad: dict[str, rows.Unreadable], shown: Any) -> None:
        self.good, self.bad, self.shown = good, bad, shown


class Held:
    """What a snapshot was built from, for the next load to start from; `read`: the rows each table's load
    read (and decoded), for tests and benches."""

    __slots__ = ("read", "tables", "version")

    def __init__(self, version: int, tables: dict[str, Table], read: dict[str, int]) -> None:
        self.version, self.tables, self.read = version, tables, read


async def load(store: Store, since: Snapshot | None = None) -> Snapshot:
    """The snapshot as stored now: read whole, or (`since`: the previous one, holding what it was built
    from) only the rows changed since. Returns `since` itself when nothing changed."""
    held = since.held if since is not None else None
    conn = await store.engine.connect()
    try:
        if conn.dialect.name != "sqlite":  # one MVCC snapshot for all the reads below
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            version, changes_from = (
                await conn.execute(
                    sa.select(state_version.c.version, state_version.c.changes_from).where(state_version.c.id == 1)
                )
            ).one()
            if not isinstance(held, Held) or version < held.version or held.version + 1 < changes_from:
                held = None
            changed = None if held is None else await _changed(conn, held)
            now = utcnow()
            if held is not None and changed is not None:
                _expire(held, changed, now)
                if version == held.version and not changed:
                    assert since is not None
                    return since
            tables: dict[str, Table] = {}
            read: dict[str, int] = {}
            for kind in KINDS:
                ids = None if changed is None else changed.get(kind.name)
                before = held.tables[kind.name] if held is not None else None
                if before is not None and not ids:
                    tables[kind.name], read[kind.name] = before, 0
                    continue
                tables[kind.name], read[kind.name] = await _read(conn, kind, now, before, ids)
    finally:
        await conn.close()
    return _snapshot(Held(version, tables, read))


async def _changed(conn: Any, held: Held) -> dict[str, set[str]]:
    """Table name -> the ids of its rows changed since `held` (or not stamped yet)."""
    c = snapshot_changes.c
    found = await conn.execute(sa.select(c.tbl, c.row_id).where(sa.or_(c.seq > held.version, c.seq.is_(None))))
    out: dict[str, set[str]] = {}
    for table, row_id in found:
        out.setdefault(table, set()).add(str(row_id))
    return out


def _expire(held: Held, changed: dict[str, set[str]], now: datetime) -> None:
    """Add to `changed` the held rows of tables whose rows leave by time that are due to be checked: the
    expired ones, and the unreadable ones (their expiry may have passed: read again, as a full load would)."""
    for kind in KINDS:
        if not kind.expires:
            continue
        table = held.tables[kind.name]
        due = {i for i, r in table.good.items() if r.expires_at is not None and r.expires_at <= now}
        due.update(table.bad)
        if due:
            changed.setdefault(kind.name, set()).update(due)


async def _read(conn: Any, kind: Kind, now: datetime, before: Table | None, ids: set[str] | None) -> tuple[Table, int]:
    """The table after reading its `ids` into `before` (a copy), or the whole table (no `before`, or too many
    ids); and how many rows were read."""
    query = sa.select(kind.table).where(*kind.live(now))
    found: list[Any] = []
    bad: list[rows.Unreadable] = []
    good: dict[str, Any] = {}
    unread: dict[str, rows.Unreadable] = {}
    if before is None or ids is None or len(ids) > max(MAX_IDS, len(before.good) + len(before.bad)):
        found, bad = await rows.fetch(conn, query, kind.table)
        before = ids = None
    else:
        good, unread = dict(before.good), dict(before.bad)
        for row_id in ids:
            good.pop(row_id, None)
            unread.pop(row_id, None)
        listed = sorted(ids)
        for start in range(0, len(listed), CHUNK):
            part, part_bad = await rows.fetch(
                conn, query.where(kind.table.c.id.in_(listed[start : start + CHUNK])), kind.table
            )
            found += part
            bad += part_bad
    read = len(found) + len(bad)  # before convert: it adds the rows it cannot build to `bad`
    for record in rows.convert(kind.name, found, kind.build, bad):
        good[str(record.id)] = record
    for u in bad:
        unread[u.id] = u
    if kind.table is api_keys and before is not None and ids is not None:
        return Table(good, unread, _keys_changed(before, good, ids)), read
    return Table(good, unread, _shown(kind, good)), read


def _keys_changed(before: Table, good: dict[str, KeyRecord], ids: set[str]) -> dict[str, KeyRecord]:
    """The keys by prefix after `ids` changed: the previous ones copied and the changed ones replaced (up to
    100,000 keys a tenant: a copy costs less than building them all again)."""
    shown: dict[str, KeyRecord] = dict(before.shown)
    held: dict[str, KeyRecord] = before.good
    for row_id in ids:
        old = held.get(row_id)
        if old is not None and shown.get(old.prefix) is old:
            del shown[old.prefix]
    for row_id in ids:
        new = good.get(row_id)
        if new is not None:
            shown[new.prefix] = new
    return shown


def _shown(kind: Kind, good: dict[str, Any]) -> Any:
    if kind.table is tenants or kind.table is teams:
        return good  # by id, as held: never changed once made (a change copies it)
    if kind.table is api_keys:
        return {k.prefix: k for k in good.values()}
    if kind.order is None:
        return tuple(good.values())
    return tuple(sorted(good.values(), key=kind.order))


def _snapshot(held: Held) -> Snapshot:
    t = held.tables
    bad = [u for kind in KINDS if kind.name != SESSION_ENDS for u in t[kind.name].bad.values()]
    ends_bad = list(t[SESSION_ENDS].bad.values())
    return Snapshot(
        version=held.version,
        tenants=t[tenants.name].shown,
        teams=t[teams.name].shown,
        keys=t[api_keys.name].shown,
        policies=t[policies.name].shown,
        entitlements=t[entitlements.name].shown,
        stateful_pins=t[stateful_pins.name].shown,
        budgets=t[budgets.name].shown,
        revocations=t[token_revocations.name].shown,
        refused=rows.refusals(bad),
        tokens_refused=rows.token_refusals(bad),
        session_ends=t[SESSION_ENDS].shown,
        unreadable=tuple(bad + ends_bad),
        held=held,
    )
