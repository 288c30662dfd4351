"""Wrapped data keys in the gateway database (`data_keys`, storage/tables.py): the only place the
keyring reads and writes them. Every method is one short transaction; none holds a plaintext key.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..storage.engine import write_connection
from ..storage.ids import new_id
from ..storage.tables import data_keys as t
from .envelope import stored_bytes


class DataKeyRow(NamedTuple):
    id: str
    tenant_id: str
    purpose: str
    backend: str
    kek_id: str
    kek_version: str
    wrapped: bytes
    messages: int
    state: str


class KeyStats(NamedTuple):
    tenant_id: str
    purpose: str
    backend: str
    kek_id: str
    kek_version: str
    state: str
    keys: int
    messages: int  # seals reserved under these keys (counted in blocks: never below the true count)
    max_messages: int  # under the busiest one


_COLUMNS = (
    t.c.id,
    t.c.tenant_id,
    t.c.purpose,
    t.c.backend,
    t.c.kek_id,
    t.c.kek_version,
    t.c.wrapped,
    t.c.messages,
    t.c.state,
)


def _row(r: sa.Row) -> DataKeyRow:
    # Not bytes (SQLite keeps text in a blob column): a wrapped key the KMS refuses to unwrap (KmsRefused, a
    # 503 naming the KMS), not a TypeError that was a 500 on every read of the tenant's records.
    wrapped = stored_bytes(r.wrapped)
    return DataKeyRow(r.id, r.tenant_id, r.purpose, r.backend, r.kek_id, r.kek_version, wrapped, r.messages, r.state)


def new_data_key_id() -> str:
    return new_id("dk")


class DataKeyRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, data_key_id: str) -> DataKeyRow | None:
        async with self.engine.connect() as conn:
            r = (await conn.execute(sa.select(*_COLUMNS).where(t.c.id == data_key_id))).first()
        return None if r is None else _row(r)

    async def active(self, tenant: str, purpose: str) -> DataKeyRow | None:
        """The newest active data key of (tenant, purpose), if any."""
        q = (
            sa.select(*_COLUMNS)
            .where(t.c.tenant_id == tenant, t.c.purpose == purpose, t.c.state == "active")
            .order_by(t.c.created_at.desc(), t.c.id)
            .limit(1)
        )
        async with self.engine.connect() as conn:
            r = (await conn.execute(q)).first()
        return None if r is None else _row(r)

    async def insert(self, row: DataKeyRow) -> None:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await conn.execute(sa.insert(t).values(**row._asdict(), created_at=datetime.now(UTC)))
        finally:
            await conn.close()

    async def reserve(self, data_key_id: str, count: int, limit: int) -> bool:
        """Count `count` more seals under an active key, unless that would pass `limit`."""
        q = (
            sa.update(t)
            .where(t.c.id == data_key_id, t.c.state == "active", t.c.messages <= limit - count)
            .values(messages=t.c.messages + count)
        )
        return await self._update(q) == 1

    async def retire(self, ids: Iterable[str] | None = None, *, tenants: Iterable[str] | None = None) -> int:
        """Active -> retired (new seals get a new data key; opens go on). By id, by tenant, or all."""
        q = sa.update(t).where(t.c.state == "active")
        if ids is not None:
            q = q.where(t.c.id.in_(list(ids)))
        if tenants is not None:
            q = q.where(t.c.tenant_id.in_(list(tenants)))
        return await self._update(q.values(state="retired", retired_at=datetime.now(UTC)))

    async def delete_tenant(self, tenant: str) -> int:
        return await self._update(sa.delete(t).where(t.c.tenant_id == tenant))

    async def tenants(self) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(sa.select(t.c.tenant_id).distinct().order_by(t.c.tenant_id))).scalars())

    async def count(self, tenant: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(t)
        if tenant is not None:
            q = q.where(t.c.tenant_id == tenant)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def stats(self) -> list[KeyStats]:
        """Data keys per (tenant, purpose, KEK, KEK version, state): how many, and the seals reserved
        under them (the most under one key, against `kms.max_messages_per_key`). For `multihome kms status`."""
        cols = (t.c.tenant_id, t.c.purpose, t.c.backend, t.c.kek_id, t.c.kek_version, t.c.state)
        q = sa.select(*cols, sa.func.count(), sa.func.sum(t.c.messages), sa.func.max(t.c.messages)).group_by(*cols)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(*cols))).all()
        return [KeyStats(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7] or 0), int(r[8] or 0)) for r in rows]

    async def page(self, after: str, limit: int, tenant: str | None = None) -> list[DataKeyRow]:
        """Rows in id order after `after` (keyset paging for rewrap)."""
        q = sa.select(*_COLUMNS).where(t.c.id > after)
        if tenant is not None:
            q = q.where(t.c.tenant_id == tenant)
        async with self.engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(q.order_by(t.c.id).limit(limit))).all()]

    async def set_wrapped(self, changes: list[tuple[DataKeyRow, bytes, str]]) -> int:
        """Store re-wrapped keys in one transaction; a row changed meanwhile (or deleted) is skipped."""
        now = datetime.now(UTC)
        done = 0
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                for row, wrapped, version in changes:
                    q = (
                        sa.update(t)
                        .where(t.c.id == row.id, t.c.wrapped == row.wrapped)
                        .values(wrapped=wrapped, kek_version=version, rewrapped_at=now)
                    )
                    done += (await conn.execute(q)).rowcount
        finally:
            await conn.close()
        return done

    async def _update(self, q: sa.Executable) -> int:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                return (await conn.execute(q)).rowcount
        finally:
            await conn.close()
