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
from . import row_reads, rows
from .apikeys import KeysRepo
from .base import as_utc, utcnow
from .budgets import BudgetsRepo
from .console_sessions import ConsoleSessionsRepo, live_session_ends, session_end
from .engine import create_engine
from .entitlements import EntitlementsRepo
from .errors import Invalid, SchemaOutOfDate
from .pins import PinsRepo, pin_from_row
from .policies import PoliciesRepo, policy_from_row
from .records import AdminEvent
from .revocations import RevocationsRepo, live_revocations
from .snapshot import Snapshot
from .tables import (
    admin_events,
    api_keys,
    budgets,
    console_session_ends,
    entitlements,
    policies,
    state_version,
    stateful_pins,
    teams,
    tenants,
    token_revocations,
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

    async def snapshot(self) -> Snapshot:
        """Everything the hot path needs, read in one consistent transaction.

        A row that cannot be read is left out and reported, never fails the whole read (storage/rows.py):
        the snapshot says whom that refuses, fail closed."""
        bad: list[rows.Unreadable] = []
        conn = await self.engine.connect()
        try:
            if not self._sqlite:  # one MVCC snapshot for all the reads below
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                version = (
                    await conn.execute(sa.select(state_version.c.version).where(state_version.c.id == 1))
                ).scalar_one()

                async def read(table: sa.Table, query: sa.Select) -> list:
                    found, unreadable = await rows.fetch(conn, query, table)
                    bad.extend(unreadable)
                    return found

                ten = await read(tenants, sa.select(tenants))
                tms = await read(teams, sa.select(teams))
                keys = await read(api_keys, sa.select(api_keys).where(api_keys.c.revoked_at.is_(None)))
                pols = await read(policies, sa.select(policies).order_by(policies.c.created_at, policies.c.id))
                ents = await read(
                    entitlements,
                    sa.select(entitlements)
                    .where(entitlements.c.revoked_at.is_(None))
                    .order_by(entitlements.c.model_group, entitlements.c.starts_on),
                )
                pins = await read(
                    stateful_pins,
                    sa.select(stateful_pins)
                    .where(stateful_pins.c.revoked_at.is_(None))
                    .order_by(stateful_pins.c.created_at, stateful_pins.c.id),
                )
                buds = await read(budgets, sa.select(budgets).order_by(budgets.c.created_at, budgets.c.id))
                revs = await read(
                    token_revocations,
                    sa.select(token_revocations)
                    .where(live_revocations(utcnow()))
                    .order_by(token_revocations.c.created_at, token_revocations.c.id),
                )
                # Reported if unreadable, but refusing no tenant's calls: a console session end restricts
                # only console sessions (docs/console.md "Ending sessions").
                ends, ends_bad = await rows.fetch(
                    conn, sa.select(console_session_ends).where(live_session_ends(utcnow())), console_session_ends
                )
        finally:
            await conn.close()
        good_keys = rows.convert("api_keys", keys, rows.key, bad)
        snap = Snapshot(
            version=version,
            tenants={t.id: t for t in rows.convert("tenants", ten, rows.tenant, bad)},
            teams={t.id: t for t in rows.convert("teams", tms, rows.team, bad)},
            keys={k.prefix: k for k in good_keys},
            # Policies and pins as stored: api/policy_gate.py refuses the tenant of one it cannot read.
            policies=tuple(rows.convert("policies", pols, rows.lenient(policy_from_row), bad)),
            entitlements=tuple(rows.convert("entitlements", ents, rows.entitlement, bad)),
            stateful_pins=tuple(rows.convert("stateful_pins", pins, rows.lenient(pin_from_row), bad)),
            budgets=tuple(rows.convert("budgets", buds, rows.budget, bad)),
            revocations=tuple(rows.convert("token_revocations", revs, rows.revocation, bad)),
            refused=rows.refusals(bad),
            tokens_refused=rows.token_refusals(bad),
            session_ends=tuple(rows.convert("console_session_ends", ends, session_end, ends_bad)),
            unreadable=tuple(bad + ends_bad),
        )
        return snap

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
