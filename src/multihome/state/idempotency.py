"""Idempotency keys of stateful creates, in the database so every replica sees them.

A client (or its SDK) that sends `Idempotency-Key` on `POST /v1/responses` and retries after a cut
connection must not create, run and bill a second response because the balancer sent the retry to
another replica. `claim` records the key for the tenant with a digest of the request in one
transaction (an insert that ignores a conflict, then a locked read of the row it met), so two
replicas racing on one key get one `NEW` and one `IN_PROGRESS`. The creator calls `done` with what
it made, or `release` when it failed (the retry then runs again). A pending key whose replica died
mid-call is taken over once `locked_until` has passed; any key once `expires_at` has.

`done` after the answer comes too late for a replica killed between the create's commit and it: the
key would stay pending, and a retry after `locked_until` would make a second object. So while a keyed
create runs, `holding` puts its key in a context variable, and the store's write that makes the object
(the response row, the conversation, the added items) marks the key done in its own transaction
(`mark`, `mark_sqlite`): the object and its key's completion are committed together or not at all.

A `store: false` response with no conversation makes no object. Its answer itself is what a retry must
get (OpenAI's Idempotency-Key: the same result, not a second call and bill), so `keep` writes it, sealed
like every stored answer, into the key's row and marks the key done in that one transaction, before the
answer is sent: a replica killed after it leaves a key whose retry is answered with those bytes; one
killed before it never answered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..crypto import Keyring
from ..crypto.envelope import stored_bytes
from ..crypto.errors import CryptoError, KmsError
from ..storage.base import as_utc
from ..storage.engine import is_sqlite, write_connection
from ..storage.tables import idempotency_keys as t

UTC = dt.UTC
TTL_S = 24 * 3600.0  # how long a key is remembered
PENDING_S = 900.0  # a pending key whose replica died (or a call that runs longer) is taken over after this
MAX_KEY = 255

NEW, IN_PROGRESS, MISMATCH, DONE = "new", "in_progress", "mismatch", "done"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: str  # NEW, IN_PROGRESS, MISMATCH or DONE
    status: int | None = None  # DONE: the original answer's HTTP status
    object_id: str | None = None  # DONE: what it created
    answer: bytes | None = None  # DONE: the sealed answer of a create that stored nothing (`keep`)


@dataclass(slots=True)
class Holding:
    """The key a running create holds, and the table whose new row is the object it makes."""

    tenant: str
    key: str
    table: str  # "responses", "conversations" or "conversation_items"
    live: bool = True  # False once the create returned: a task it left behind marks nothing


_HOLDING: ContextVar[Holding | None] = ContextVar("multihome_idempotency_holding", default=None)
_STATUS = 200  # what every keyed create answers when it made its object


@contextmanager
def holding(tenant: str, key: str, table: str) -> Iterator[Holding]:
    """While the block runs (and in tasks it starts), the write of a `table` row marks the key done."""
    held = Holding(tenant, key, table)
    token = _HOLDING.set(held)
    try:
        yield held
    finally:
        held.live = False
        _HOLDING.reset(token)


def held(table: str) -> Holding | None:
    """The key the running create holds, if a write of a `table` row completes it (read on the event loop)."""
    found = _HOLDING.get()
    return found if found is not None and found.live and found.table == table else None


def _done(held: Holding, object_id: str) -> sa.Update:
    return (
        sa.update(t)
        .where(t.c.tenant_id == held.tenant, t.c.key == held.key, t.c.state == "pending")
        .values(state="done", status=_STATUS, object_id=object_id)
    )


def mark(conn: Connection, held: Holding | None, object_id: str) -> None:
    """Mark the held key done with `object_id` in `conn`'s transaction (the one that writes the object)."""
    if held is not None:
        conn.execute(_done(held, object_id))


async def mark_async(conn: AsyncConnection, held: Holding | None, object_id: str) -> None:
    if held is not None:
        await conn.execute(_done(held, object_id))


_DONE_SQLITE = (
    f"UPDATE {t.name} SET state = 'done', status = {_STATUS}, object_id = ? "
    "WHERE tenant_id = ? AND key = ? AND state = 'pending'"
)


def mark_sqlite(raw: sqlite3.Connection, held: Holding | None, object_id: str) -> None:
    """`mark` on the sqlite3 connection itself (storage/sqlite_threads.py `write_raw`)."""
    if held is not None:
        raw.execute(_DONE_SQLITE, (object_id, held.tenant, held.key)).close()


def digest(endpoint: str, body: bytes) -> str:
    return hashlib.sha256(endpoint.encode() + b"\0" + body).hexdigest()


_PURPOSE, _TABLE = "responses", "idempotency_keys"  # the answer is a response's: sealed as one, bound to its key


class IdempotencyKeys:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        keyring: Keyring | None = None,
        ttl_s: float = TTL_S,
        pending_s: float = PENDING_S,
    ) -> None:
        self.engine = engine
        self.keyring = keyring  # seals and opens kept answers (`keep`, `opened`)
        self.ttl_s = ttl_s
        self.pending_s = pending_s
        self._insert: Any = sqlite.insert if is_sqlite(engine) else postgresql.insert
        self._lock = not is_sqlite(engine)  # SQLite: BEGIN IMMEDIATE already holds the write lock

    async def claim(self, tenant: str, key: str, endpoint: str, body_digest: str) -> Claim:
        now = dt.datetime.now(UTC)
        fresh = dict(
            endpoint=endpoint,
            digest=body_digest,
            state="pending",
            status=None,
            object_id=None,
            answer=None,
            locked_until=now + dt.timedelta(seconds=self.pending_s),
            expires_at=now + dt.timedelta(seconds=self.ttl_s),
        )
        mine = (t.c.tenant_id == tenant) & (t.c.key == key)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                ins = self._insert(t).values(tenant_id=tenant, key=key, **fresh).on_conflict_do_nothing()
                if (await conn.execute(ins)).rowcount == 1:
                    return Claim(NEW)
                q = sa.select(t).where(mine)
                row = (await conn.execute(q.with_for_update() if self._lock else q)).one()
                expired = as_utc(row.expires_at) <= now
                abandoned = row.state == "pending" and as_utc(row.locked_until) <= now
                if expired or (abandoned and row.digest == body_digest):
                    await conn.execute(sa.update(t).where(mine).values(**fresh))
                    return Claim(NEW)
                if row.digest != body_digest or row.endpoint != endpoint:
                    return Claim(MISMATCH)
                if row.state == "pending":
                    return Claim(IN_PROGRESS)
                return Claim(DONE, row.status, row.object_id, row.answer)
        finally:
            await conn.close()

    async def done(self, tenant: str, key: str, status: int, object_id: str | None) -> None:
        await self._write(
            sa.update(t)
            .where(t.c.tenant_id == tenant, t.c.key == key)
            .values(state="done", status=status, object_id=object_id)
        )

    async def keep(self, held: Holding, object_id: str, answer: bytes | None) -> None:
        """Mark the held key done with `object_id` and, when given, the `answer` (the body a retry gets),
        sealed, in one transaction committed before it returns: call it before the answer is sent."""
        values: dict[str, Any] = dict(state="done", status=_STATUS, object_id=object_id)
        if answer is not None:
            assert self.keyring is not None, "an answer is kept sealed"
            values["answer"] = await self.keyring.seal(held.tenant, _PURPOSE, _TABLE, held.key, answer)
        mine = (t.c.tenant_id == held.tenant) & (t.c.key == held.key) & (t.c.state == "pending")
        await self._write(sa.update(t).where(mine).values(**values))

    async def opened(self, tenant: str, key: str, claim: Claim) -> bytes | None:
        """The answer `keep` kept for a done key, or None (none kept, or it no longer opens: its tenant's
        data key shredded, the row copied from another key). A KMS that cannot be asked raises."""
        if claim.answer is None or self.keyring is None:
            return None
        try:
            return await self.keyring.open(tenant, _PURPOSE, _TABLE, key, stored_bytes(claim.answer))
        except KmsError:
            raise
        except CryptoError:
            return None

    async def release(self, tenant: str, key: str) -> None:
        """The call failed before it created anything: forget the key, so a retry runs it again."""
        await self._write(sa.delete(t).where(t.c.tenant_id == tenant, t.c.key == key, t.c.state == "pending"))

    async def sweep(self) -> int:
        """Delete expired keys. -> how many."""
        now = dt.datetime.now(UTC)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                return (await conn.execute(sa.delete(t).where(t.c.expires_at <= now))).rowcount
        finally:
            await conn.close()

    async def _write(self, stmt: Any) -> None:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await conn.execute(stmt)
        finally:
            await conn.close()


__all__ = [
    "DONE",
    "IN_PROGRESS",
    "MISMATCH",
    "NEW",
    "Claim",
    "Holding",
    "IdempotencyKeys",
    "digest",
    "held",
    "holding",
    "mark",
    "mark_async",
    "mark_sqlite",
]
