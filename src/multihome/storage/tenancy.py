"""Tenants and teams."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..schema import admin_fields as fields
from ..schema.errors import echo
from ..schema.principal import ORG_ADMIN, TENANT_ADMIN
from . import rows
from .base import StoreBase, checked, nonempty, refuse_past, utcnow
from .budgets import Outranked
from .errors import Conflict, Invalid, NotFound
from .ids import new_id, timed_id
from .policies import PolicyOutranked
from .records import Team, Tenant
from .row_reads import Listed, Page, by_creation, read_all, read_one, read_page
from .tables import api_keys, budgets, entitlements, policies, stateful_pins, teams, tenants

# Teams of one tenant at most: every replica holds each (the snapshot), so a tenant admin making team after
# team grew them all for good.
MAX_TEAMS_PER_TENANT = 10_000


def _metadata(value: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    checked(fields.metadata(value))
    return value


class TenancyRepo(StoreBase):
    # -- tenants ------------------------------------------------------------------------------

    async def create_tenant(self, name: str, *, metadata: dict[str, Any] | None = None, actor: str) -> Tenant:
        tenant = Tenant(
            id=new_id("ten"), name=nonempty(name, "name"), metadata=_metadata(metadata), created_at=utcnow()
        )
        async with self._write() as conn:
            taken = await conn.scalar(sa.select(tenants.c.id).where(tenants.c.name == name))
            if taken is not None:
                raise Conflict(f"a tenant named '{echo(name)}' already exists ({taken})", conflicting=taken)
            await conn.execute(
                sa.insert(tenants).values(
                    id=tenant.id, name=tenant.name, metadata=tenant.metadata, created_at=tenant.created_at
                )
            )
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant.id,
                action="tenant.create",
                object_type="tenant",
                object_id=tenant.id,
                detail={"name": name},
            )
        return tenant

    async def update_tenant(
        self, tenant_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None, actor: str
    ) -> Tenant:
        """Rename a tenant and/or replace its metadata. Only the given columns are written, and none read
        first, so this also mends a row whose metadata cannot be read (UnreadableRow after it if the row is
        still unreadable: its creation time, which only SQL can fix)."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = nonempty(name, "name")
        if metadata is not None:
            values["metadata"] = _metadata(metadata)
        if not values:
            raise Invalid("give 'name' and/or 'metadata'")
        async with self._write() as conn:
            if await conn.scalar(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)) is None:
                raise NotFound("tenant", tenant_id)
            if name is not None:
                q = sa.select(tenants.c.id).where(tenants.c.name == name, tenants.c.id != tenant_id)
                taken = await conn.scalar(q)
                if taken is not None:
                    raise Conflict(f"a tenant named '{echo(name)}' already exists ({taken})", conflicting=taken)
            await conn.execute(sa.update(tenants).where(tenants.c.id == tenant_id).values(**values))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="tenant.update",
                object_type="tenant",
                object_id=tenant_id,
                detail={"changed": sorted(values), **({"name": name} if name is not None else {})},
            )
        return await self.get_tenant(tenant_id)

    async def get_tenant(self, tenant_id: str) -> Tenant:
        async with self._read() as conn:
            q = sa.select(tenants).where(tenants.c.id == tenant_id)
            return await read_one(conn, q, tenants, rows.tenant, "tenant", tenant_id, None)

    async def get_tenant_by_name(self, name: str) -> Tenant:
        async with self._read() as conn:
            q = sa.select(tenants).where(tenants.c.name == name)
            return await read_one(conn, q, tenants, rows.tenant, "tenant", name, None)

    async def list_tenants(self) -> Listed[Tenant]:
        """The readable tenants by name; `.unreadable` reports the others."""
        async with self._read() as conn:
            return await read_all(conn, sa.select(tenants).order_by(tenants.c.name), tenants, rows.tenant)

    async def delete_tenant(self, tenant_id: str, *, actor: str) -> None:
        """Delete a tenant with its teams, keys, policies, entitlements and pins (the admin events stay)."""
        async with self._write() as conn:
            # Its id and name only: the rest of a tenant row may be what cannot be read (deleting mends it).
            row = (await conn.execute(sa.select(tenants.c.name).where(tenants.c.id == tenant_id))).first()
            if row is None:
                raise NotFound("tenant", tenant_id)
            counts = {}
            for label, table in (
                ("teams", teams),
                ("keys", api_keys),
                ("policies", policies),
                ("entitlements", entitlements),
                ("stateful_pins", stateful_pins),
                ("budgets", budgets),
            ):
                counts[label] = await conn.scalar(
                    sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
                )
            await conn.execute(sa.delete(tenants).where(tenants.c.id == tenant_id))  # ON DELETE CASCADE
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="tenant.delete",
                object_type="tenant",
                object_id=tenant_id,
                detail={"name": row.name, **counts},
            )

    # -- teams --------------------------------------------------------------------------------

    async def create_team(self, tenant_id: str, name: str, *, actor: str) -> Team:
        now = utcnow()
        team = Team(id=timed_id("team", now), tenant_id=tenant_id, name=nonempty(name, "name"), created_at=now)
        # One lock per tenant (PostgreSQL; SQLite serializes writes): concurrent creates cannot all count room
        # for one and all insert.
        async with self._write(lock=f"teams:{tenant_id}") as conn:
            await self._require_tenant(conn, tenant_id)
            taken = await conn.scalar(sa.select(teams.c.id).where(teams.c.tenant_id == tenant_id, teams.c.name == name))
            if taken is not None:
                raise Conflict(
                    f"tenant {tenant_id} already has a team named '{echo(name)}' ({taken})", conflicting=taken
                )
            mine = (teams.c.tenant_id == tenant_id,)
            await refuse_past(
                conn, teams, mine, MAX_TEAMS_PER_TENANT, tenant_id, "teams", "delete one it no longer needs first"
            )
            await conn.execute(
                sa.insert(teams).values(id=team.id, tenant_id=tenant_id, name=team.name, created_at=team.created_at)
            )
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="team.create",
                object_type="team",
                object_id=team.id,
                detail={"name": name},
            )
        return team

    async def get_team(self, tenant_id: str, team_id: str) -> Team:
        async with self._read() as conn:
            q = sa.select(teams).where(teams.c.tenant_id == tenant_id, teams.c.id == team_id)
            return await read_one(conn, q, teams, rows.team, "team", team_id, tenant_id)

    async def page_teams(self, tenant_id: str, limit: int, after: str | None = None) -> Page[Team]:
        """A page of the tenant's teams, oldest first, after the team `after` (its id); `.unreadable` reports the rows of
        the page that cannot be read. A tenant may hold 10,000 teams: the admin API reads them a page at a time."""
        q = sa.select(teams).where(teams.c.tenant_id == tenant_id)
        async with self._read() as conn:
            return await read_page(conn, q, teams, rows.team, teams.c.created_at, limit, after, place=by_creation)

    async def delete_team(self, tenant_id: str, team_id: str, *, actor: str, role: str = ORG_ADMIN) -> None:
        """Refused while the team has usable keys; revoked keys are detached, team policies and budgets go.
        A tenant-admin (`role`) may not delete a team an org-admin set a budget on (Outranked) or a policy on
        (PolicyOutranked): it would go with the team, and it still binds the team's OIDC callers (their token
        names the team)."""
        async with self._write() as conn:
            row = (  # its name only: the rest may be what cannot be read (deleting mends it)
                await conn.execute(sa.select(teams.c.name).where(teams.c.tenant_id == tenant_id, teams.c.id == team_id))
            ).first()
            if row is None:
                raise NotFound("team", team_id, tenant_id)
            live = (
                await conn.execute(
                    sa.select(api_keys.c.id)
                    .where(
                        api_keys.c.tenant_id == tenant_id,
                        api_keys.c.team_id == team_id,
                        api_keys.c.revoked_at.is_(None),
                    )
                    .limit(1)
                )
            ).scalar()
            if live is not None:
                raise Conflict(
                    f"team {team_id} still has active API keys (e.g. {live}); revoke them first", conflicting=live
                )
            if role != ORG_ADMIN:
                capped = await conn.scalar(_org_admins_on_team(budgets, tenant_id, team_id))
                if capped is not None:
                    raise Outranked(
                        f"Team {team_id} has budget {capped}, set by an org-admin; deleting the team would remove "
                        "it, and a tenant-admin may not lift an org-admin's cap. Ask an org admin."
                    )
                ruled = await conn.scalar(_org_admins_on_team(policies, tenant_id, team_id))
                if ruled is not None:
                    raise PolicyOutranked(
                        ruled,
                        "delete",
                        f"Team {team_id} has policy {ruled}, set by an org-admin; deleting the team would remove it, "
                        "and a tenant-admin may not change or delete an org-admin's policy. Ask an org admin.",
                    )
            await conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.tenant_id == tenant_id, api_keys.c.team_id == team_id)
                .values(team_id=None)
            )
            await conn.execute(
                sa.delete(policies).where(
                    policies.c.tenant_id == tenant_id, policies.c.scope == "team", policies.c.scope_id == team_id
                )
            )
            await conn.execute(
                sa.delete(budgets).where(
                    budgets.c.tenant_id == tenant_id, budgets.c.scope == "team", budgets.c.scope_id == team_id
                )
            )
            await conn.execute(sa.delete(teams).where(teams.c.id == team_id))
            await self._record(
                conn,
                actor=actor,
                tenant_id=tenant_id,
                action="team.delete",
                object_type="team",
                object_id=team_id,
                detail={"name": row.name},
            )


def _org_admins_on_team(table: sa.Table, tenant_id: str, team_id: str) -> sa.Select:
    """The id of one row of `table` (budgets, policies) scoped to the team and set by an org-admin, if any."""
    c = table.c
    return (
        sa.select(c.id)
        .where(c.tenant_id == tenant_id, c.scope == "team", c.scope_id == team_id, c.set_by_role != TENANT_ADMIN)
        .limit(1)
    )
