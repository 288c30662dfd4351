"""`StateStore`: responses, conversations and conversation items in the gateway database, sealed.

What a tenant wrote or a model answered is sealed (crypto `seal`, purpose `responses`) before it is
written and bound to its table and row, so a row copied to another tenant or id does not open. The
clear columns hold ids, the tenant, times, status and sizes only (storage/tables.py).

Every read and write names the tenant in its WHERE clause: another tenant's response or
conversation is simply not found, so the API answers 404 and an id leaks nothing. Every write is
committed before the method returns: a client that has its answer can retrieve or continue it at
once, on any replica. Deletes are real deletes of the rows.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..config.responses import ConversationsConfig
from ..crypto import Keyring
from ..crypto.envelope import stored_bytes
from ..crypto.errors import CryptoError, KmsError
from ..storage import row_reads
from ..storage.base import StoreBase, as_utc, sqlite_stamp
from ..storage.errors import Conflict
from ..storage.rows import Unreadable
from ..storage.sqlite_threads import Busy, SqliteThreads
from ..storage.tables import conversation_items, conversations, response_deletions, response_events, responses
from .bound import DEFAULT, ConversationChanged, over
from .cache import OpenedResponses, held_cost
from .idempotency import held, mark, mark_async, mark_sqlite
from .pairs import check_pairs
from .tenant_quota import TenantQuota

PURPOSE = "responses"
# Only these never change once stored (a background response is queued, then runs; a cancelled one
# gets the output its run had produced), so only these are kept opened in memory.
FINAL = frozenset({"completed", "failed", "incomplete"})
MAX_CHAIN = 10_000  # previous_response_id links followed at most (a chain is a list, never a cycle)
Item = dict[str, Any]
T = TypeVar("T")
_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(dict[str, Any])


def _walk() -> sa.CTE:
    """A response's chain (id, previous id, depth from the response), the tenant's only: built once (bound
    parameters), so each rebuild is one compiled-cache hit and one query."""
    tenant: sa.BindParameter[str] = sa.bindparam("tenant")
    top = sa.select(responses.c.id, responses.c.previous_response_id, sa.literal(0).label("depth")).where(
        responses.c.id == sa.bindparam("rid"), responses.c.tenant_id == tenant
    )
    walk = top.cte("chain", recursive=True)
    parent = responses.alias("parent")
    return walk.union_all(
        sa.select(parent.c.id, parent.c.previous_response_id, (walk.c.depth + 1).label("depth")).where(
            parent.c.id == walk.c.previous_response_id, parent.c.tenant_id == tenant, walk.c.depth < MAX_CHAIN
        )
    )


_WALK = _walk()
_CHAIN_IDS = sa.select(_WALK.c.id).order_by(_WALK.c.depth.desc())  # the ids, oldest first
# The rows too, with their depth (for a chain this replica holds none of: one query instead of two); not
# ordered by SQL, which would sort the bodies through a temporary b-tree (`_oldest_first`).
_CHAIN_ROWS = sa.select(responses, _WALK.c.depth).join(_WALK, _WALK.c.id == responses.c.id)


class _Sqlite:
    """A compiled statement run on the sqlite3 connection itself (a third of the CPU of running it through
    SQLAlchemy, storage/sqlite_threads.py): its positional parameters, the constant ones (the depth's start
    and bound) filled in once."""

    def __init__(self, statement: sa.Select[Any]) -> None:
        compiled = statement.compile(dialect=sqlite.dialect())
        self.sql = compiled.string
        self.order = tuple(compiled.positiontup or ())
        self.fixed = compiled.construct_params({"rid": "", "tenant": ""})

    def run(self, raw: sqlite3.Connection, response_id: str, tenant: str) -> list[Any]:
        given = {"rid": response_id, "tenant": tenant}
        return raw.execute(self.sql, tuple(given[k] if k in given else self.fixed[k] for k in self.order)).fetchall()


_CHAIN_IDS_SQLITE = _Sqlite(_CHAIN_IDS)
_DEPTH = operator.itemgetter(-1)
_CHAIN_ROWS_SQLITE = _Sqlite(_CHAIN_ROWS)
# A chain this replica holds opened whole is checked against the database by the count of deletions, and by
# its ids when that moved (`_sqlite_still_there`), up to this many turns (~1 µs each on the loop: the query's
# cost stays below a hop's); a longer one is walked on a reader thread.
INLINE_CHAIN = 256


def _sqlite_chain_ids(raw: sqlite3.Connection, response_id: str, tenant: str) -> list[str]:
    """The chain's ids, oldest first (`_CHAIN_IDS`)."""
    return [row[0] for row in _CHAIN_IDS_SQLITE.run(raw, response_id, tenant)]


_DELETIONS_SQL = f"SELECT n FROM {response_deletions.name}"


def _sqlite_still_there(raw: sqlite3.Connection, ids: list[str], known: int | None) -> tuple[int | None, bool | None]:
    """The deletion count (None without its row: a schema not made by the migrations) and, unless it is
    `known` (under which every one of `ids` was known to exist, so none was deleted since), whether they all
    still exist (`_sqlite_all_there`, after the count was read)."""
    row = raw.execute(_DELETIONS_SQL).fetchone()
    deletions = None if row is None else int(row[0])
    if deletions is not None and deletions == known:
        return deletions, None
    return deletions, _sqlite_all_there(raw, ids)


def _sqlite_all_there(raw: sqlite3.Connection, ids: list[str]) -> bool:
    """Whether every one of `ids` (distinct) still has its row: the check a chain held in memory needs once
    a deletion moved the count. Only the primary key's index is read (covering), not the rows with their
    bodies that the recursive walk reads: after another connection's commit has emptied this connection's
    page cache (every turn: the usage writer commits), about half the walk's cost at 20 turns.
    The tenant and the links need no query: the cache checked the tenant, and a stored row never changes
    (its id is never issued again), so a row with the id is the one held."""
    sql = f"SELECT count(*) FROM {responses.name} WHERE id IN ({','.join('?' * len(ids))})"
    return bool(raw.execute(sql, ids).fetchone()[0] == len(ids))


_INSERT_RESPONSE = sa.insert(responses)  # values bound per call: compiled once, not rebuilt per turn
_INSERT_RESPONSE_SQLITE = (
    f"INSERT INTO {responses.name} ({', '.join(c.name for c in responses.columns)}) "
    f"VALUES ({', '.join('?' for _ in responses.columns)})"
)


def _sqlite_response_values(record: StoredResponse, body: bytes, size: int) -> tuple[Any, ...]:
    """`response_row` as the sqlite3 module binds it, in the table's column order; `created_at` as
    SQLAlchemy's SQLite DateTime stores it (storage/base.py sqlite_stamp), so either reads it back."""
    row = response_row(record, body, size)
    row["created_at"] = sqlite_stamp(record.created_at)
    return tuple(row[c.name] for c in responses.columns)


class _Row(NamedTuple):
    """A `responses` row as `_sqlite_rows` reads it (the attributes a SQLAlchemy row has)."""

    id: str
    tenant_id: str
    previous_response_id: str | None
    conversation_id: str | None
    status: str
    created_at: datetime
    size: int
    body: bytes


_ROW_SQL = f"SELECT {', '.join(_Row._fields)} FROM {responses.name} WHERE tenant_id = ? AND id IN "
_IN_CHUNK = 500  # ids per query: well under any SQLite build's limit on parameters


def _raw(conn: Connection) -> sqlite3.Connection:
    raw = conn.connection.dbapi_connection
    assert raw is not None  # a live pooled connection
    return cast(sqlite3.Connection, raw)


def _sqlite_rows(conn: Connection, ids: list[str], tenant: str) -> list[_Row]:
    """The rows of `ids` read on the sqlite3 connection itself: on a replica that has opened none of
    a long chain, ~5x cheaper than through SQLAlchemy. `created_at` as SQLAlchemy's SQLite DateTime
    stores it (ISO text, UTC)."""
    raw = _raw(conn)
    out: list[_Row] = []
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        sql = _ROW_SQL + "(" + ",".join("?" * len(chunk)) + ")"
        out += map(_row, raw.execute(sql, (tenant, *chunk)).fetchall())
    return out


def _oldest_first(rows: Sequence[Any]) -> list[Any]:
    """`_CHAIN_ROWS`'s rows, oldest first: by their depth, the last column, highest first (SQLite produces
    them lowest first: one run for the sort, linear)."""
    return sorted(rows, key=_DEPTH, reverse=True)


def _row(r: tuple[Any, ...]) -> _Row:
    # created_at parsed as UTC in one C call (a naive parse then `replace(tzinfo=)` costs five times as much).
    return _Row(r[0], r[1], r[2], r[3], r[4], datetime.fromisoformat(r[5] + "+00:00"), r[6], r[7])


@dataclass(slots=True)
class StoredResponse:
    """A response as stored: the Response object as the client was sent it, and its own input items.
    Read-only once stored (chains share instances through the cache)."""

    id: str
    tenant: str
    status: str
    response: dict[str, Any]
    input: list[Item]
    previous_response_id: str | None = None
    conversation_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # A background response's run: its request, the principal it runs as, its request id (state/background.py).
    background: dict[str, Any] | None = None


@dataclass(slots=True)
class Conversation:
    id: str
    tenant: str
    created_at: datetime
    metadata: dict[str, str]


class UnknownItem(LookupError):
    """A list's cursor names no item of it."""


@dataclass(slots=True)
class ItemPage:
    items: list[Item]
    has_more: bool
    # The conversation as read before its items: how many it holds and their bytes (its bound), and where
    # its next item goes (`append_items`' `expect_end`: nothing added since these items were read).
    count: int = 0
    size: int = 0
    end: int = 0


# A sealed row's kind, as a 409 `unreadable_row` names it (storage/row_reads.py MENDS).
_KINDS = {"responses": "stored response", "conversations": "conversation", "conversation_items": "conversation item"}


class StateStore(StoreBase):
    def __init__(
        self,
        engine: AsyncEngine,
        keyring: Keyring,
        *,
        cache_bytes: int = 64 << 20,
        sqlite_sync: str = "full",
        conversations: ConversationsConfig = DEFAULT,
    ) -> None:
        super().__init__(engine)
        self.keyring = keyring
        self.bound = conversations  # a conversation's items at most (state/bound.py)
        # a tenant's conversations at most (state/tenant_quota.py)
        self.quota = TenantQuota(conversations.tenant_limits, self.tenant_totals, conversations.per_tenant_refresh_s)
        self._opened = OpenedResponses(cache_bytes)  # what chains are rebuilt from (state/cache.py)
        # SQLite (a file): the hot reads and writes on threads of their own, writes group-committed.
        self._threads = (
            SqliteThreads(engine, synchronous=sqlite_sync)
            if self._sqlite and engine.url.database not in (None, "", ":memory:")
            else None
        )

    # -- sealing -------------------------------------------------------------------------------------
    async def ready_to_seal(self, tenant: str) -> None:
        """The tenant's data key cached (a dict lookup when it is): a turn that stores its answer meets a KMS
        that cannot seal (KmsError) before its model is called and billed, not once the answer is in."""
        await self.keyring.ready(tenant, PURPOSE)

    async def _seal(self, tenant: str, table: str, record_id: str, value: Any) -> tuple[bytes, int]:
        sealed, plain = await self._seal_plain(tenant, table, record_id, value)
        return sealed, len(plain)

    async def _seal_plain(self, tenant: str, table: str, record_id: str, value: Any) -> tuple[bytes, bytes]:
        plain = _encode(value)
        return await self.keyring.seal(tenant, PURPOSE, table, record_id, plain), plain

    async def _open(self, tenant: str, table: str, record_id: str, sealed: bytes) -> dict[str, Any]:
        try:
            return _decode.decode(await self.keyring.open(tenant, PURPOSE, table, record_id, stored_bytes(sealed)))
        except KmsError:
            raise  # the KMS's answer (503 unavailable, refused), not the row's
        except (CryptoError, msgspec.DecodeError) as exc:  # sealed for another row, cut short, not what was sealed
            bad = Unreadable(table, record_id, tenant, f"its body cannot be opened ({type(exc).__name__})")
            raise row_reads.unreadable(_KINDS.get(table, table), bad) from None

    # -- responses -----------------------------------------------------------------------------------
    async def put_response(
        self,
        record: StoredResponse,
        append: Sequence[Item] = (),
        *,
        encoded: bytes | None = None,
        counted: int | None = None,
        expect_end: int | None = None,
    ) -> None:
        """Store a response; with `append`, add those items to its conversation in the same transaction
        (a conversation never holds half a turn). Raises LookupError if the conversation is gone.
        Committed (on SQLite with group commit, storage/sqlite_threads.py) before it returns.
        `encoded`: `record.response` as JSON already (the answer's body), sealed as it is, not encoded again.
        `counted` and `expect_end`: as `append_items`'; then nothing at all is stored when refused."""
        seen = self._opened.deletions  # the row exists from its commit on: under this count, or a later one
        body, plain = await self._seal_response(record, encoded)
        size = len(plain)
        sealed = await self._seal_items(record.tenant, record.conversation_id, append) if append else []
        key = held("responses")  # a keyed create's: done with this row (state/idempotency.py)

        def write(conn: Connection) -> None:
            conn.execute(_INSERT_RESPONSE, response_row(record, body, size))
            if sealed:
                assert record.conversation_id is not None
                bound = self.bound if counted is not None else None
                insert_items(conn, record.tenant, record.conversation_id, sealed, bound, expect_end, counted)
            mark(conn, key, record.id)

        if self._threads is not None and not sealed:  # the common turn: one row, plain SQL on the writer
            values = _sqlite_response_values(record, body, size)

            def write_raw(raw: sqlite3.Connection) -> None:
                raw.execute(_INSERT_RESPONSE_SQLITE, values).close()
                mark_sqlite(raw, key, record.id)

            try:
                await self._threads.write_raw(write_raw, len(body))
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"the change conflicts with stored data: {exc}") from exc
        else:
            await self._commit(write, lock=record.conversation_id)
        if record.status in FINAL:
            self._opened.put(record, held_cost(plain), seen)  # committed: the next turn here reads none of it

    @staticmethod
    async def insert_response(conn: AsyncConnection, record: StoredResponse, body: bytes, size: int) -> None:
        """The response's row, inside the caller's write transaction."""
        await conn.execute(_INSERT_RESPONSE, response_row(record, body, size))

    async def seal_response(self, record: StoredResponse, encoded: bytes | None = None) -> tuple[bytes, int]:
        """The response's sealed row body and its plaintext size."""
        body, plain = await self._seal_response(record, encoded)
        return body, len(plain)

    async def _seal_response(self, record: StoredResponse, encoded: bytes | None) -> tuple[bytes, bytes]:
        check_pairs(record.response.get("output") or ())
        check_pairs(record.input)
        response = record.response if encoded is None else msgspec.Raw(encoded)
        data: dict[str, Any] = {"response": response, "input": record.input}
        if record.background is not None:
            data["background"] = record.background
        return await self._seal_plain(record.tenant, "responses", record.id, data)

    async def _commit(self, work: Callable[[Connection], T], lock: str | None = None) -> T:
        """`work` in a write transaction of its own (PostgreSQL; with the advisory `lock`) or in the SQLite
        writer's next group commit; an integrity error is a Conflict, as from `_write`."""
        try:
            if self._threads is not None:
                return await self._threads.write(work)
        except IntegrityError as exc:
            raise Conflict(f"the change conflicts with stored data: {exc.orig}") from exc
        async with self._write(lock=lock) as conn:
            return await conn.run_sync(work)

    async def _run_read(self, work: Callable[[Connection], T]) -> T:
        """`work` in one read transaction: on an SQLite reader thread, or through the async engine."""
        if self._threads is not None:
            return await self._threads.read(work)
        async with self._read() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        if self._threads is not None:
            threads, self._threads = self._threads, None
            await asyncio.to_thread(threads.close)

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        """The response, None if not this tenant's; UnreadableRow (409) if its row cannot be read."""
        q = sa.select(responses).where(responses.c.id == response_id, responses.c.tenant_id == tenant)
        async with self._read() as conn:
            row, bad = await row_reads.first(conn, q, responses)
        if bad is not None:
            raise row_reads.unreadable("stored response", bad)
        return None if row is None else await self._response(row)

    async def chain(self, tenant: str, response_id: str) -> list[StoredResponse] | None:
        """The response and its ancestors through `previous_response_id`, oldest first; None if the
        response is not this tenant's. An ancestor that was deleted ends the chain there."""
        opened = self._opened

        def read(conn: Connection) -> tuple[list[str], Sequence[sa.Row[Any] | _Row]]:
            # One unit of work: the chain's ids, and the rows of those this replica has not opened
            # (a membership test only: the cache itself is the event loop's).
            if not opened.holds(response_id):  # a chain served elsewhere: likely none of it here, one query
                if conn.dialect.name == "sqlite":
                    found = _CHAIN_ROWS_SQLITE.run(_raw(conn), response_id, tenant)
                    every: Sequence[sa.Row[Any] | _Row] = list(map(_row, _oldest_first(found)))
                else:
                    every = _oldest_first(conn.execute(_CHAIN_ROWS, {"rid": response_id, "tenant": tenant}).all())
                return [r.id for r in every], [r for r in every if not opened.holds(r.id)]
            if conn.dialect.name == "sqlite":
                ids = _sqlite_chain_ids(_raw(conn), response_id, tenant)
            else:
                ids = list(conn.execute(_CHAIN_IDS, {"rid": response_id, "tenant": tenant}).scalars())
            missing = [i for i in ids if not opened.holds(i)]
            if not missing:
                return ids, ()
            if conn.dialect.name == "sqlite":
                return ids, _sqlite_rows(conn, missing, tenant)
            q = sa.select(responses).where(responses.c.id.in_(missing), responses.c.tenant_id == tenant)
            return ids, conn.execute(q).all()

        ids: list[str] | None = None
        rows: Sequence[sa.Row[Any] | _Row] = ()
        threads = self._threads
        seen = opened.deletions  # any row read below exists under this count, or a later one
        held = opened.held_chain(response_id, tenant, INLINE_CHAIN) if threads is not None else None
        if held is not None:
            # Held opened whole (the common next turn): the database is asked only whether every turn is
            # still there, by its count of deletions, and by the ids only when that moved. On the loop when
            # that needs no wait and nothing is being written (c=1), else on a reader thread (under load each
            # sqlite3 call on the loop would give the GIL to the writer).
            assert threads is not None
            known = opened.checked(held)

            def check(raw: sqlite3.Connection) -> tuple[int | None, bool | None]:
                return _sqlite_still_there(raw, held, known)

            answer: tuple[int | None, bool | None] | None = None
            if threads.idle():
                try:
                    answer = threads.read_here(check)
                except Busy:
                    pass
            if answer is None:
                answer = await threads.read(lambda conn: check(_raw(conn)))
            deletions, there = answer
            if deletions is not None:
                opened.saw(deletions, held if there else None)
            if there is not False:
                ids = held  # a turn evicted from memory during the read is read below (`lost`)
        if ids is None:
            ids, rows = await self._run_read(read)
            if held is not None:  # some turn held here was deleted (on any replica): its plaintext goes too
                for gone in set(held).difference(ids or ()):
                    opened.drop(gone)
        if not ids:
            return None
        found = {i: hit for i in ids if (hit := opened.get(i, tenant)) is not None}
        fetched = {row.id for row in rows}
        lost = [i for i in ids if i not in found and i not in fetched]
        if lost:  # evicted from the cache between the read and now: read those rows after all
            q = sa.select(responses).where(responses.c.id.in_(lost), responses.c.tenant_id == tenant)
            rows = [*rows, *await self._run_read(lambda conn: conn.execute(q).all())]
        if rows:
            for row, (record, cost) in zip(rows, await self._responses(tenant, rows), strict=True):
                found[row.id] = record
                if record.status in FINAL:
                    opened.put(record, cost, seen)
        return [found[i] for i in ids if i in found]

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        async with self._write() as conn:
            done = await conn.execute(
                sa.delete(responses).where(responses.c.id == response_id, responses.c.tenant_id == tenant)
            )
            if done.rowcount:  # a background response's stream events go with it
                await conn.execute(sa.delete(response_events).where(response_events.c.response_id == response_id))
        self._opened.drop(response_id)
        return bool(done.rowcount)

    async def _responses(self, tenant: str, rows: Sequence[sa.Row[Any] | _Row]) -> list[tuple[StoredResponse, int]]:
        """Many rows of one tenant opened at once (keyring.open_many): a cold chain opens hundreds. Each with
        the memory it holds once opened (cache.held_cost)."""
        plain = await self.keyring.open_many(
            tenant, PURPOSE, "responses", [(row.id, stored_bytes(row.body)) for row in rows]
        )
        out = []
        for row, text in zip(rows, plain, strict=True):
            data = _decode.decode(text)
            created = row.created_at if type(row) is _Row else as_utc(row.created_at)  # _Row's is UTC already
            out.append(
                (
                    StoredResponse(
                        row.id,
                        row.tenant_id,
                        row.status,
                        data["response"],
                        data["input"],
                        row.previous_response_id,
                        row.conversation_id,
                        created,
                        data.get("background"),
                    ),
                    held_cost(text),
                )
            )
        return out

    async def _response(self, row: sa.Row[Any] | _Row) -> StoredResponse:
        data = await self._open(row.tenant_id, "responses", row.id, row.body)
        return StoredResponse(
            id=row.id,
            tenant=row.tenant_id,
            status=row.status,
            response=data["response"],
            input=data["input"],
            previous_response_id=row.previous_response_id,
            conversation_id=row.conversation_id,
            created_at=as_utc(row.created_at),
            background=data.get("background"),
        )

    # -- conversations -------------------------------------------------------------------------------
    async def create_conversation(
        self, tenant: str, conversation_id: str, metadata: dict[str, str], items: Sequence[Item] = ()
    ) -> Conversation:
        now = datetime.now(UTC)
        body, size = await self._seal(tenant, "conversations", conversation_id, {"metadata": metadata})
        sealed = await self._seal_items(tenant, conversation_id, items)
        added = size + sum(n for _, _, n in sealed)
        key = held("conversations")
        async with self.quota.holding(tenant, 1, added), self._write() as conn:
            await conn.execute(
                sa.insert(conversations).values(
                    id=conversation_id,
                    tenant_id=tenant,
                    created_at=now,
                    updated_at=now,
                    next_position=0,
                    size=size,
                    body=body,
                )
            )
            await conn.run_sync(insert_items, tenant, conversation_id, sealed, self.bound)
            await mark_async(conn, key, conversation_id)
        self.quota.added(tenant, 1, added)
        return Conversation(conversation_id, tenant, now, metadata)

    async def get_conversation(self, tenant: str, conversation_id: str) -> Conversation | None:
        q = sa.select(conversations).where(conversations.c.id == conversation_id, conversations.c.tenant_id == tenant)
        async with self._read() as conn:
            row, bad = await row_reads.first(conn, q, conversations)
        if bad is not None:
            raise row_reads.unreadable("conversation", bad)
        if row is None:
            return None
        data = await self._open(tenant, "conversations", row.id, row.body)
        return Conversation(row.id, tenant, as_utc(row.created_at), data["metadata"])

    async def update_conversation(
        self, tenant: str, conversation_id: str, metadata: dict[str, str]
    ) -> Conversation | None:
        body, size = await self._seal(tenant, "conversations", conversation_id, {"metadata": metadata})
        async with self._write() as conn:
            done = await conn.execute(
                sa.update(conversations)
                .where(conversations.c.id == conversation_id, conversations.c.tenant_id == tenant)
                .values(body=body, size=size, updated_at=datetime.now(UTC))
            )
        return await self.get_conversation(tenant, conversation_id) if done.rowcount else None

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        """Deletes the conversation and its items (unlike OpenAI, which keeps the items: here deleting
        means the data is gone)."""
        async with self._write() as conn:
            await conn.execute(
                sa.delete(conversation_items).where(
                    conversation_items.c.conversation_id == conversation_id, conversation_items.c.tenant_id == tenant
                )
            )
            freed = await conn.scalar(
                sa.delete(conversations)
                .where(conversations.c.id == conversation_id, conversations.c.tenant_id == tenant)
                .returning(conversations.c.size + conversations.c.item_bytes)
            )
        if freed is None:
            return False
        self.quota.removed(tenant, 1, int(freed))
        return True

    async def append_items(
        self,
        tenant: str,
        conversation_id: str,
        items: Sequence[Item],
        *,
        counted: int | None = None,
        expect_end: int | None = None,
        response_id: str | None = None,
    ) -> bool:
        """Add items at the end of a conversation; False if it is not this tenant's. ConversationFull (nothing
        added) if they would take it past its bound; `counted`: only the first that many are held to it (a
        turn's input: its answer, served already, is appended whatever its size, never lost). `expect_end`:
        ConversationChanged (nothing added) if items were added since the caller read the conversation's end
        there (`ItemPage.end`), so a check of these items against those is never stale. `response_id`: the
        turn (not stored itself) these items are the input and answer of."""
        sealed = await self._seal_items(tenant, conversation_id, items)
        bound = self.bound
        # A client's add is held to its tenant's limit; a turn's items are not (the turn is metered, and its
        # answer, served, is never lost).
        added = sum(n for _, _, n in sealed) if response_id is None else 0
        # A keyed create's key is done with these items: an add's (named by its first item), or a turn's
        # that stores no response (`response_id`: what its key names).
        if response_id is not None:
            key, made = held("responses"), response_id
        else:
            key, made = (held("conversation_items"), items[0]["id"]) if items else (None, "")

        def write(conn: Connection) -> None:
            insert_items(conn, tenant, conversation_id, sealed, bound, expect_end, counted)
            mark(conn, key, made)

        try:
            async with self.quota.holding(tenant, 0, added):
                await self._commit(write, lock=conversation_id)
        except LookupError:
            return False
        self.quota.added(tenant, 0, added)
        return True

    async def items(
        self,
        tenant: str,
        conversation_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> ItemPage | None:
        """A page of a conversation's items in order (`after`: an item id, exclusive); None if the
        conversation is not this tenant's. UnknownItem if `after` names no item of it."""
        t = conversation_items
        async with self._read() as conn:
            totals = await self._totals(conn, tenant, conversation_id)
            if totals is None:
                return None
            q = sa.select(t.c.id, t.c.position, t.c.body).where(t.c.conversation_id == conversation_id)
            if after is not None:
                pos = await conn.scalar(
                    sa.select(t.c.position).where(t.c.conversation_id == conversation_id, t.c.id == after)
                )
                if pos is None:
                    raise UnknownItem(after)
                q = q.where(t.c.position < pos if desc else t.c.position > pos)
            q = q.order_by(t.c.position.desc() if desc else t.c.position)
            if limit is not None:
                q = q.limit(limit + 1)
            rows = (await conn.execute(q)).all()
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        opened = [await self._open_item(tenant, conversation_id, r.id, r.body) for r in rows]
        return ItemPage(opened, more, totals.item_count, totals.item_bytes, totals.next_position)

    async def get_item(self, tenant: str, conversation_id: str, item_id: str) -> Item | None:
        t = conversation_items
        async with self._read() as conn:
            body = await conn.scalar(
                sa.select(t.c.body).where(
                    t.c.conversation_id == conversation_id, t.c.id == item_id, t.c.tenant_id == tenant
                )
            )
        return None if body is None else await self._open_item(tenant, conversation_id, item_id, body)

    async def delete_item(self, tenant: str, conversation_id: str, item_id: str) -> bool:
        """The item's row, and its count and bytes from the conversation's totals, in one transaction (on
        SQLite the writer's: one thread hop, not one per statement), under the conversation's lock. It moves
        the conversation's end on too (positions keep their order; a gap is harmless): a turn whose tool call
        or result was checked against the items before the delete sees the conversation changed at its
        append (`expect_end`) and is checked again, so a result never lands after its call was deleted."""

        def delete(conn: Connection) -> int | None:
            size = conn.scalar(_DELETE_ITEM, {"conv": conversation_id, "item": item_id, "tenant": tenant})
            if size is not None:
                conn.execute(_SHRINK, {"conv": conversation_id, "bytes": size})
            return size

        freed = await self._commit(delete, lock=conversation_id)
        if freed is None:
            return False
        self.quota.removed(tenant, 0, freed)
        return True

    async def _open_item(self, tenant: str, conversation_id: str, item_id: str, body: bytes) -> Item:
        return await self._open(tenant, "conversation_items", f"{conversation_id}/{item_id}", body)

    async def _seal_items(
        self, tenant: str, conversation_id: str | None, items: Sequence[Item]
    ) -> list[tuple[str, bytes, int]]:
        check_pairs(items)
        out = []
        for item in items:
            record = f"{conversation_id}/{item['id']}"
            body, size = await self._seal(tenant, "conversation_items", record, item)
            out.append((item["id"], body, size))
        return out

    async def tenant_totals(self, tenant: str) -> tuple[int, int]:
        """The tenant's conversations: how many, and the plaintext bytes of their metadata and items."""
        async with self._read() as conn:
            row = (await conn.execute(_TENANT_TOTALS, {"tenant": tenant})).one()
        return int(row[0]), int(row[1])

    async def _totals(self, conn: AsyncConnection, tenant: str, conversation_id: str) -> sa.Row[Any, Any, Any] | None:
        """The conversation's totals and end, if it is this tenant's."""
        c = conversations
        found = await conn.execute(
            sa.select(c.c.item_count, c.c.item_bytes, c.c.next_position).where(
                c.c.id == conversation_id, c.c.tenant_id == tenant
            )
        )
        return found.first()


def response_row(record: StoredResponse, body: bytes, size: int) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant_id": record.tenant,
        "previous_response_id": record.previous_response_id,
        "conversation_id": record.conversation_id,
        "status": record.status,
        "created_at": record.created_at,
        "size": size,
        "body": body,
    }


def insert_items(
    conn: Connection,
    tenant: str,
    conversation_id: str,
    sealed: list[tuple[str, bytes, int]],
    bound: ConversationsConfig | None = None,
    expect_end: int | None = None,
    counted: int | None = None,
) -> None:
    """Inside a write transaction that holds the conversation's lock: positions never collide, and what is
    checked here (its bound, `counted`, `expect_end`: see `append_items`) holds when the items are committed,
    whatever was added concurrently. With `counted`, the conversation exceeds its bound by at most the
    uncounted items of the last add let in (a turn's answer): a later add finds it full."""
    row = conn.execute(_CONVERSATION_END, {"conv": conversation_id, "tenant": tenant}).first()
    if row is None:
        raise LookupError(conversation_id)
    start = row.next_position
    if expect_end is not None and start != expect_end:
        raise ConversationChanged(conversation_id)
    if not sealed:
        return
    added = sum(size for _, _, size in sealed)
    if bound is not None:
        n, held = (len(sealed), added) if counted is None else (counted, sum(size for _, _, size in sealed[:counted]))
        full = over(bound, conversation_id, row.item_count + n, row.item_bytes + held)
        if full is not None:
            raise full
    now = datetime.now(UTC)
    conn.execute(
        _INSERT_ITEM,
        [
            {
                "conversation_id": conversation_id,
                "position": start + i,
                "id": item_id,
                "tenant_id": tenant,
                "created_at": now,
                "size": size,
                "body": body,
            }
            for i, (item_id, body, size) in enumerate(sealed)
        ],
    )
    grown = {"conv": conversation_id, "end": start + len(sealed), "n": len(sealed), "bytes": added, "at": now}
    conn.execute(_GROW, grown)


# The statements of `insert_items` and `delete_item`, built once (values bound per call): built per call,
# SQLAlchemy's expression objects cost more than the statements' execution.
_c, _i = conversations, conversation_items
_CONVERSATION_END = sa.select(_c.c.next_position, _c.c.item_count, _c.c.item_bytes).where(
    _c.c.id == sa.bindparam("conv"), _c.c.tenant_id == sa.bindparam("tenant")
)
_INSERT_ITEM = sa.insert(_i)
_TENANT_TOTALS = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(_c.c.size + _c.c.item_bytes), 0)).where(
    _c.c.tenant_id == sa.bindparam("tenant")
)
_GROW = (
    sa.update(_c)
    .where(_c.c.id == sa.bindparam("conv"))
    .values(
        next_position=sa.bindparam("end"),
        item_count=_c.c.item_count + sa.bindparam("n"),
        item_bytes=_c.c.item_bytes + sa.bindparam("bytes"),
        updated_at=sa.bindparam("at"),
    )
)
_DELETE_ITEM = (
    sa.delete(_i)
    .where(
        _i.c.conversation_id == sa.bindparam("conv"),
        _i.c.id == sa.bindparam("item"),
        _i.c.tenant_id == sa.bindparam("tenant"),
    )
    .returning(_i.c.size)
)
_SHRINK = (
    sa.update(_c)
    .where(_c.c.id == sa.bindparam("conv"))
    .values(
        item_count=_c.c.item_count - 1,
        item_bytes=_c.c.item_bytes - sa.bindparam("bytes"),
        next_position=_c.c.next_position + 1,
    )
)
