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

from ..crypto.errors import CryptoError, KmsError
from ..crypto.keyring import Keyring
from ..storage import row_reads
from ..storage.base import hold_lock, refuse_past
from ..storage.engine import write_connection
from ..storage.errors import Conflict, NotFound, UnreadableRow, unavailable
from ..storage.ids import new_id
from ..storage.rows import Fields, Unreadable
from ..storage.tables import mcp_servers as t
from .model import McpEndpoint
from .spec import Approval, url_key

PURPOSE = "credentials"
TABLE = "mcp_servers"
KIND = "MCP server"  # in NotFound's message: "MCP server x not found in tenant y"
# Registrations of one tenant at most: a tenant's admin registering server after server grew the table, and every
# request naming a server by URL reads the tenant's registrations (`lookup`).
MAX_SERVERS_PER_TENANT = 1_000


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
                # One lock per tenant: concurrent registrations cannot all count room for one and all insert.
                await hold_lock(conn, f"mcp_servers:{tenant}")
                if await conn.scalar(sa.select(t.c.id).where(t.c.tenant_id == tenant, t.c.name == name)):
                    raise Conflict(f"tenant {tenant} already has an MCP server named {name}", conflicting=name)
                await refuse_past(
                    conn,
                    t,
                    (t.c.tenant_id == tenant,),
                    MAX_SERVERS_PER_TENANT,
                    tenant,
                    "MCP servers",
                    "delete one it no longer needs first",
                )
                await conn.execute(sa.insert(t).values(**values))
        finally:
            await conn.close()
        return _view(values)

    async def update(self, tenant: str, name: str, changes: dict[str, Any], actor: str) -> McpServerView:
        """Apply `changes` (url, description, allowed_tools, require_approval, headers: the whole set).

        Only the given columns are written, and the row is not read first (its id alone, a plain string),
        so this also mends a row whose given fields cannot be read, headers sealed for another row too
        (sealed again under this row's id). Read back in the same transaction: a row still unreadable (a
        field not given) is rolled back, nothing written, and UnreadableRow (409) names what is left."""
        async with self.engine.connect() as conn:
            row_id = await conn.scalar(sa.select(t.c.id).where(t.c.tenant_id == tenant, t.c.name == name))
        if not isinstance(row_id, str):
            raise NotFound(KIND, name, tenant)  # (an id that is not text: no row the API could have made)
        values: dict[str, Any] = {k: v for k, v in changes.items() if k != "headers"}
        if "require_approval" in values:
            values["require_approval"] = msgspec.to_builtins(values["require_approval"])
        if "headers" in changes:
            values["headers"] = await self._seal(tenant, row_id, changes["headers"])  # first: KmsError -> 503
            values["header_names"] = sorted(changes["headers"])
        values.update(updated_at=datetime.now(UTC), updated_by=actor[:200])
        mine = (t.c.id == row_id, t.c.tenant_id == tenant, t.c.name == name)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                done = await conn.execute(sa.update(t).where(*mine).values(**values))
                if not done.rowcount:  # deleted (or renamed by SQL) meanwhile
                    raise NotFound(KIND, name, tenant)
                row, bad = await row_reads.one(conn, sa.select(t).where(*mine), t, _row)
                if bad is not None:  # raised inside: rolled back
                    raise row_reads.unreadable(KIND, msgspec.structs.replace(bad, id=name))
                if row is None:
                    raise NotFound(KIND, name, tenant)
        finally:
            await conn.close()
        return _view(row)

    async def delete(self, tenant: str, name: str) -> None:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                gone = await conn.execute(sa.delete(t).where(t.c.tenant_id == tenant, t.c.name == name))
        finally:
            await conn.close()
        if not gone.rowcount:
            raise NotFound(KIND, name, tenant)

    async def page(self, tenant: str, limit: int, after: str | None = None) -> row_reads.Page[McpServerView]:
        """A page of the tenant's servers by name, after the server named `after`; `.unreadable` the rows of the
        page that cannot be read, named as the API names servers (by name)."""
        q = sa.select(t).where(t.c.tenant_id == tenant)
        async with self.engine.connect() as conn:
            found = await row_reads.read_page(
                conn, q, t, _row, t.c.name, limit, after, key=t.c.name, place=row_reads.by_key
            )
            bad = await self._by_name(conn, found.unreadable)
        out: row_reads.Page[McpServerView] = row_reads.Page(_view(r) for r in found)
        out.unreadable, out.more, out.last = bad, found.more, found.last
        return out

    async def _rows(self, tenant: str) -> row_reads.Listed[dict[str, Any]]:
        """The tenant's rows that can be read (checked, `_Stored`); `.unreadable` the others."""
        async with self.engine.connect() as conn:
            q = sa.select(t).where(t.c.tenant_id == tenant).order_by(t.c.name)
            found = await row_reads.read_all(conn, q, t, _row)
            found.unreadable = await self._by_name(conn, found.unreadable)
            return found

    @staticmethod
    async def _by_name(conn: Any, bad: tuple[Unreadable, ...]) -> tuple[Unreadable, ...]:
        """Rows that cannot be read, named as the API names servers (by name), not by the row's id."""
        if not bad:
            return bad
        ids = [u.id for u in bad]
        names = dict((await conn.execute(sa.select(t.c.id, t.c.name).where(t.c.id.in_(ids)))).all())
        return tuple(msgspec.structs.replace(u, id=names.get(u.id, u.id)) for u in bad)

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
            try:
                plain = await self.keyring.open(tenant, PURPOSE, TABLE, row["id"], bytes(row["headers"]))
                headers = json.loads(plain)
            except KmsError:
                raise  # the KMS's answer (503 unavailable, refused), not the row's
            except (CryptoError, TypeError, ValueError) as exc:  # sealed for another row, cut, not JSON
                bad = Unreadable(TABLE, name, tenant, f"its headers cannot be opened ({type(exc).__name__})")
                raise row_reads.unreadable(KIND, bad) from None
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise row_reads.unreadable(KIND, Unreadable(TABLE, name, tenant, "its headers are not a map"))
        return McpEndpoint(name=name, url=row["url"], headers=headers, tenant=tenant)

    async def unchanged(self, tenant: str, view: McpServerView, *, outage_raises: bool = False) -> bool:
        """Whether the registration `view` was read from is still there as it was: not deleted, recreated or
        changed since (its URL, tools, approvals or headers). A run resolves its servers once and calls them
        for up to its time budget; an admin who removes or narrows a registration stops its next call.
        `outage_raises`: a database that cannot be reached raises (a background run's job is tried again)
        rather than answering False (the call fails, not made)."""
        try:
            now = _view(await self._row(tenant, view.name))
        except (NotFound, UnreadableRow):
            return False
        except Exception as exc:  # the database cannot be reached: not known to be unchanged, so no call
            if not unavailable(exc) or outage_raises:
                raise
            return False
        return now.created_at == view.created_at and now.updated_at == view.updated_at and now.url == view.url

    async def by_url(self, tenant: str, url: str) -> list[McpServerView]:
        """The tenant's servers registered at `url` (compared by `spec.url_key`)."""
        return [view for view, _ in await self.lookup(tenant, None, url)]

    async def _row(self, tenant: str, name: str) -> dict[str, Any]:
        """The row of `name`: NotFound, or UnreadableRow (409) naming what is wrong with it."""
        async with self.engine.connect() as conn:
            q = sa.select(t).where(t.c.tenant_id == tenant, t.c.name == name)
            row, bad = await row_reads.one(conn, q, t, _row)
        if bad is not None:
            raise row_reads.unreadable(KIND, msgspec.structs.replace(bad, id=name))  # the API's id: its name
        if row is None:
            raise NotFound(KIND, name, tenant)
        return row


class Loaded:
    """A server's row as `lookup` read it: its endpoint opened from that row, not read again."""

    def __init__(self, store: McpServerStore, tenant: str, row: dict[str, Any]) -> None:
        self._store, self._tenant, self._row = store, tenant, row

    async def endpoint(self) -> McpEndpoint:
        return await self._store._endpoint(self._tenant, self._row)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite hands back naive times


class _Stored(msgspec.Struct):
    """A row's fields as the gateway reads them: checked with no coercion (list() of a string would make
    a list of letters), so a row another version or a hand edit wrote is reported, not served wrong."""

    id: str
    tenant_id: str
    name: str
    url: str
    description: str
    allowed_tools: list[str] | None
    require_approval: Approval
    header_names: list[str]
    headers: bytes | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


def _row(r: Any, fields: Fields) -> dict[str, Any]:
    """A stored row as a mapping, checked (`_Stored`); a row that fails is reported as unreadable."""
    row = dict(zip(fields, r))
    msgspec.convert(row, _Stored)
    return row


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
