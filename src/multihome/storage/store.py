"""`Store`: the durable home of tenants, teams, API keys, policies, entitlements, stateful-work pins,
budgets, token revocations, console session ends and admin events.

Every mutation runs in one transaction that also writes an admin event and bumps the one-row
`state_version` counter; replicas poll that counter (`SnapshotCache`) and serve identity and
policy from an in-memory `Snapshot`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import migrate as _migrate
from . import row_reads, rows, snapshot_load
from .apikeys import KeysRepo
from .base import as_utc
from .budgets import BudgetsRepo
from .console_sessions import ConsoleSessionsRepo
from .engine import create_engine
from .entitlements import EntitlementsRepo
from .errors import Invalid, SchemaOutOfDate
from .pins import PinsRepo
from .policies import PoliciesRepo
from .records import AdminEvent
from .revocations import RevocationsRepo
from .snapshot import Snapshot
from .tables import (
    admin_events,
)
from .tenancy import TenancyRepo


class Store(
    TenancyRepo,
    KeysRepo,
    PoliciesRepo,
    EntitlementsRepo,
    PinsRepo,
    BudgetsRepo,
    RevocationsRepo,
    ConsoleSessionsRepo,
):
    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        await self.close_readers()
        await self.engine.dispose()

    async def migrate(self) -> str:
        """Bring the schema to head (idempotent, safe to run from several replicas at once)."""
        return await _migrate.upgrade_if_behind(self.engine)

    async def schema_revision(self) -> str | None:
        return await _migrate.current_revision(self.engine)

    async def ensure_current(self) -> None:
        """Raise SchemaOutOfDate unless the database is at this code's head revision."""
        current, head = await self.schema_revision(), _migrate.head_revision()
        if current != head:
            raise SchemaOutOfDate(current, head)

    async def snapshot(self, since: Snapshot | None = None) -> Snapshot:
        """Everything the hot path needs, read in one consistent transaction: whole, or given the previous
        snapshot (`since`), only the rows changed since it (storage/snapshot_load.py).

        A row that cannot be read is left out and reported, never fails the whole read (storage/rows.py):
        the snapshot says whom that refuses, fail closed."""
        return await snapshot_load.load(self, since)

    async def admin_events(
        self, tenant_id: str | None = None, *, limit: int = 100, after: int | None = None
    ) -> row_reads.Listed[AdminEvent]:
        """Admin changes in commit order, oldest first. Page with `after=<last seq seen>`.

        `tenant_id=None` returns every tenant's events and the org-wide ones.
        """
        if not 1 <= limit <= 10_000:
            raise Invalid("limit must be between 1 and 10000")
        q = sa.select(admin_events)
        if tenant_id is not None:
            q = q.where(admin_events.c.tenant_id == tenant_id)
        if after is not None:
            q = q.where(admin_events.c.seq > after)
        async with self._read() as conn:
            # An event edited by hand is reported, not a 500 (row_reads.Listed.unreadable).
            return await row_reads.read_all(conn, q.order_by(admin_events.c.seq).limit(limit), admin_events, _event)

    async def tenant_in_history(self, tenant_id: str) -> bool:
        """Whether an admin event names the tenant: every stored tenant's creation (and deletion) is one, and
        events are never pruned, so a deleted tenant is in it and an id that never was a tenant is not."""
        q = sa.select(admin_events.c.seq).where(admin_events.c.tenant_id == tenant_id).limit(1)
        async with self._read() as conn:
            return (await conn.execute(q)).first() is not None


async def open_store(url: str, *, migrate: bool = False) -> Store:
    """Open (not create) the database at `url`: `sqlite+aiosqlite:///path` or `postgresql+asyncpg://...`.

    With `migrate=True` the schema is brought to head first (the embedded single-node default).
    """
    store = Store(create_engine(url))
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
    return store


def _event(r: Any, _fields: rows.Fields) -> AdminEvent:
    """An admin_events row as an AdminEvent (row_reads.read_all's build): its detail must be a JSON object."""
    if not isinstance(r.detail, dict):
        raise rows.RowProblem("detail: expected a JSON object")
    return AdminEvent(
        seq=r.seq,
        id=r.id,
        at=as_utc(r.at),
        actor=r.actor,
        tenant_id=r.tenant_id,
        action=r.action,
        object_type=r.object_type,
        object_id=r.object_id,
        detail=dict(r.detail),
    )
