"""The MCP server registry: rows of `mcp_servers`, one per (tenant, name), headers sealed.

The only reader and writer of that table. Header values are credentials: they are sealed under the
tenant's `credentials` data key, bound to the row's id, before anything is written (a KMS that
cannot be reached fails the change with `KmsUnavailable` and nothing is stored, as for provider
credentials, crypto/credentials.py), and opened only into an `McpEndpoint` in memory when a server
is called. What is ever shown (`McpServerView`) names the headers, never their values.

A store is cheap to make (a keyring and an engine): the admin API and the per-request resolver
each make one over the gateway's keyring.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..crypto.keyring import Keyring
from ..storage.engine import write_connection
from ..storage.errors import Conflict, NotFound
from ..storage.ids import new_id
from ..storage.tables import mcp_servers as t
from .model import McpEndpoint
from .spec import Approval, url_key

PURPOSE = "credentials"
TABLE = "mcp_servers"
KIND = "MCP server"  # in NotFound's message: "MCP server x not found in tenant y"


class McpServerView(msgspec.Struct, kw_only=True):
    """A registered server as the admin API shows it: header names, never their values."""

    id: str  # the name (it is the path segment, and what the audit trail names)
    tenant_id: str
    name: str
    url: str
    description: str
    allowed_tools: list[str] | None  # null: every tool the server lists
    require_approval: Approval
    header_names: list[str]
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    object: str = "mcp_server"


class McpServerStore:
    def __init__(self, keyring: Keyring, engine: AsyncEngine) -> None:
        self.keyring = keyring
        self.engine = engine

    async def _seal(self, tenant: str, row_id: str, headers: dict[str, str]) -> bytes | None:
        if not headers:
            return None
        return await self.keyring.seal(tenant, PURPOSE, TABLE, row_id, json.dumps(headers).encode())

    async def create(
        self,
        tenant: str,
        name: str,
        *,
        url: str,
        description: str,
        allowed_tools: list[str] | None,
        require_approval: Approval,
        headers: dict[str, str],
        actor: str,
    ) -> McpServerView:
        row_id = new_id("mcp")
        sealed = await self._seal(tenant, row_id, headers)  # first: KmsError -> 503, nothing stored
        now, actor = datetime.now(UTC), actor[:200]
        values = {
            "id": row_id,
            "tenant_id": tenant,
            "name": name,
            "url": url,
            "description": description,
            "allowed_tools": allowed_tools,
            "require_approval": msgspec.to_builtins(require_approval),
            "header_names": sorted(headers),
            "headers": sealed,
            "created_at": now,
            "created_by": actor,
            "updated_at": now,
            "updated_by": actor,
        }
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                if await conn.scalar(sa.select(t.c.id).where(t.c.tenant_id == tenant, t.c.name == name)):
                    raise Conflict(f"tenant {tenant} already has an MCP server named {name}", conflicting=name)
                await conn.execute(sa.insert(t).values(**values))
        finally:
            await conn.close()
        return _view(values)

    async def update(self, tenant: str, name: str, changes: dict[str, Any], actor: str) -> McpServerView:
        """Apply `changes` (url, description, allowed_tools, require_approval, headers: the whole set)."""
        row = await self._row(tenant, name)
        values: dict[str, Any] = {k: v for k, v in changes.items() if k != "headers"}
        if "require_approval" in values:
            values["require_approval"] = msgspec.to_builtins(values["require_approval"])
        if "headers" in changes:
            values["headers"] = await self._seal(tenant, row["id"], changes["headers"])
            values["header_names"] = sorted(changes["headers"])
        values.update(updated_at=datetime.now(UTC), updated_by=actor[:200])
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                done = await conn.execute(sa.update(t).where(t.c.id == row["id"]).values(**values))
        finally:
            await conn.close()
        if not done.rowcount:  # deleted meanwhile
            raise NotFound(KIND, name, tenant)
        return _view({**row, **values})

    async def delete(self, tenant: str, name: str) -> None:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                gone = await conn.execute(sa.delete(t).where(t.c.tenant_id == tenant, t.c.name == name))
        finally:
            await conn.close()
        if not gone.rowcount:
            raise NotFound(KIND, name, tenant)

    async def servers(self, tenant: str) -> list[McpServerView]:
        return [_view(r) for r in await self._rows(tenant)]

    async def _rows(self, tenant: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t).where(t.c.tenant_id == tenant).order_by(t.c.name))).mappings()
            return [dict(r) for r in rows]

    async def get(self, tenant: str, name: str) -> McpServerView:
        return _view(await self._row(tenant, name))

    async def endpoint(self, tenant: str, name: str) -> McpEndpoint:
        """The server to call, its headers opened (in memory only; may reach the KMS on a cold cache)."""
        return await self._endpoint(tenant, await self._row(tenant, name))

    async def lookup(self, tenant: str, name: str | None, url: str | None) -> list[tuple[McpServerView, Loaded]]:
        """The servers a request's tool names, by `name` or else at `url` (as `by_url`), each with its
        endpoint to open: one read per request's tool, where `get` or `by_url` then `endpoint` read the
        row twice (an agent run resolves its tools on every request)."""
        if url is None:
            assert name is not None
            rows = [await self._row(tenant, name)]
        else:
            key = url_key(url)
            rows = [r for r in await self._rows(tenant) if key is not None and url_key(r["url"]) == key]
        return [(_view(r), Loaded(self, tenant, r)) for r in rows]

    async def _endpoint(self, tenant: str, row: dict[str, Any]) -> McpEndpoint:
        name = row["name"]
        headers: dict[str, str] = {}
        if row["headers"] is not None:
            plain = await self.keyring.open(tenant, PURPOSE, TABLE, row["id"], bytes(row["headers"]))
            headers = json.loads(plain)
        return McpEndpoint(name=name, url=row["url"], headers=headers)

    async def by_url(self, tenant: str, url: str) -> list[McpServerView]:
        """The tenant's servers registered at `url` (compared by `spec.url_key`)."""
        return [view for view, _ in await self.lookup(tenant, None, url)]

    async def _row(self, tenant: str, name: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.tenant_id == tenant, t.c.name == name))).mappings().first()
        if row is None:
            raise NotFound(KIND, name, tenant)
        return dict(row)


class Loaded:
    """A server's row as `lookup` read it: its endpoint opened from that row, not read again."""

    def __init__(self, store: McpServerStore, tenant: str, row: dict[str, Any]) -> None:
        self._store, self._tenant, self._row = store, tenant, row

    async def endpoint(self) -> McpEndpoint:
        return await self._store._endpoint(self._tenant, self._row)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite hands back naive times


def _view(row: dict[str, Any]) -> McpServerView:
    return McpServerView(
        id=row["name"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        url=row["url"],
        description=row["description"],
        allowed_tools=row["allowed_tools"],
        require_approval=msgspec.convert(row["require_approval"], Approval),
        header_names=list(row["header_names"]),
        created_at=_utc(row["created_at"]),
        created_by=row["created_by"],
        updated_at=_utc(row["updated_at"]),
        updated_by=row["updated_by"],
    )
