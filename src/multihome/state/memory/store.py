"""`MemoryStore`: long-term memory records per tenant and namespace (agent, user), sealed, searchable.

A record's text, metadata and embedding are sealed together (crypto `seal`, purpose `memory`,
bound to `memory_records` and the record's id) before they are written; the clear columns hold ids,
sequence numbers, times and sizes only (storage/tables.py). Every read, write and delete names the
tenant in its WHERE clause, so another tenant's record or namespace is simply not found.

Search runs on a `NamespaceIndex` (index.py) this replica keeps per namespace: built by opening the
namespace's records the first time it is searched here, then kept current by reading only what
changed (every write or delete takes the namespace's next sequence number under its row lock, and
a delete leaves a tombstone naming the id), checked with one single-row read per search. So a record
written or deleted on any replica is seen by the next search on every replica.

Embeddings: every vector of a namespace comes from one `Space` (model and dimension), recorded on the
namespace by its first write; later writes and every query of it are embedded in that space (the offline
model here, or a routed deployment of the same upstream model: embedder.py), and refused with
`SpaceUnavailable` when it cannot be had, never compared with another model's. A write embeds its
records before its transaction begins, so a failed embedding writes nothing.

Deletes are real: the row goes, and so does the record's entry in every replica's index (the
tombstone tells them; tombstones carry no content and are pruned after a day, while an index idle
for an hour is dropped, so none is older than the tombstones it needs). "Forget a user" deletes
the user's namespaces (records and tombstones with them) in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...config.memory import MemoryConfig
from ...crypto import Keyring
from ...crypto.envelope import stored_bytes
from ...crypto.errors import CryptoError, KmsError
from ...storage import row_reads
from ...storage.base import StoreBase, as_utc, hold_lock
from ...storage.errors import UnreadableRow
from ...storage.ids import new_id
from ...storage.pg_reads import HeldReads
from ...storage.rows import DECODE_ERRORS, RowProblem, Unreadable
from ...storage.rows import fetch as rows_of
from ...storage.rows import problem as row_problem
from ...storage.tables import memory_namespaces, memory_records, memory_tombstones
from ..tenant_quota import TenantQuota, TenantStorageFull
from . import namespace_pages
from .embedder import OFFLINE_PREFIX, Caller, Embedder, Routed, Space, SpaceUnavailable
from .locks import NamespaceLock, NamespaceLocks
from .threads import TenantThreads

if TYPE_CHECKING:  # numpy and the index are imported on the first memory use (numeric.py), not at gateway start
    import numpy as np

    from .index import NamespaceIndex

log = logging.getLogger(__name__)
PURPOSE = "memory"
TABLE = "memory_records"
LOAD_BATCH = 2000  # records read and opened per step when an index is built or caught up
TOMBSTONE_TTL = timedelta(days=1)
INDEX_IDLE_S = 3600.0  # an index not searched for this long is dropped (then rebuilt when needed)
# Namespace locks beyond those of cached indexes before the idle ones are dropped (`_drop_idle_locks`).
MAX_IDLE_LOCKS = 1_000
BUDGET_DIM = 256  # the in-memory budget counts records of this many dimensions (a 1,536-dimension one is six)
NAMESPACE_WEIGHT = 4  # what a held index weighs besides its rows (its dicts and lists), in records
Meta = dict[str, Any]
T = TypeVar("T")
# Imported on a thread the first time the store needs them (`_modules_loaded`): numpy and the index's stemmer
# are ~0.3-0.4 s of imports, which on the event loop would hold every other caller of the gateway.
_LAZY_MODULES = (f"{__package__}.numeric", f"{__package__}.index")
_lazy_loaded = False


async def _modules_loaded() -> None:
    global _lazy_loaded
    if not _lazy_loaded:
        for name in _LAZY_MODULES:
            await asyncio.to_thread(importlib.import_module, name)
        _lazy_loaded = True


class _Body(msgspec.Struct, array_like=True):
    """What a record's sealed body holds (MessagePack: the vector as raw float16 bytes)."""

    text: str
    metadata: Meta
    # The model that made `vector` (its namespace's; an offline record made by another is re-embedded on load).
    model: str
    vector: bytes


_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(_Body)


@dataclass(slots=True)
class MemoryRecord:
    id: str
    agent_id: str
    user_id: str
    text: str
    metadata: Meta
    created_at: datetime
    expires_at: datetime | None


@dataclass(slots=True)
class Namespace:
    id: str
    agent_id: str
    user_id: str
    default_ttl_s: int | None
    records: int
    created_at: datetime
    updated_at: datetime
    embedding_model: str | None = None  # the namespace's embedding model (None: nothing embedded yet)
    embedding_dim: int | None = None


# What `usage` leaves out on SQLite, which keeps any value in any column (storage/row_reads.py).
_NS_MISFITS = row_reads.misfits(memory_namespaces, stamps=("updated_at",))
_RECORD_MISFITS = row_reads.misfits(memory_records, ints=("size",), stamps=("created_at",))


def _undecodable(key: tuple[str, str, str], exc: BaseException, ns_id: str | None = None) -> Exception:
    """A namespace whose row, or a record of it, the driver cannot decode (SQLite keeps any value in any
    column): its search and index loads are a 409 naming the namespace, not a 500; the records list
    names the record, and deleting it (or the namespace) mends it."""
    tenant, agent_id, user_id = key
    name = ns_id or f"agent_id={agent_id!r}, user_id={user_id!r}"
    problem = f"it or one of its records holds a value that cannot be decoded ({type(exc).__name__})"
    return row_reads.unreadable("memory namespace", Unreadable(str(memory_namespaces.name), name, tenant, problem))


@dataclass(slots=True)
class _Skipped:
    """A record of a page that cannot be read, where it stands in the page's order."""

    seq: int
    unreadable: Unreadable


async def _in_order(conn: Any, q: sa.Select[Any], rows: Sequence[Any], bad: list[Unreadable]) -> list[Any]:
    """A page's rows in the page's order with the unreadable ones in their places (as `_Skipped`), so the
    page neither ends early nor skips one unseen: its ids and seqs read again (plain columns: they read)."""
    by_id = {row.id: row for row in rows}
    named = {u.id: u for u in bad}
    out: list[Any] = []
    for rid, seq in (await conn.execute(q.with_only_columns(memory_records.c.id, memory_records.c.seq))).all():
        if rid in named:
            out.append(_Skipped(seq, named[rid]))
        elif rid in by_id:
            out.append(by_id[rid])
    return out


def _unopened(record_id: str, tenant: str, exc: BaseException) -> Unreadable:
    return Unreadable(str(memory_records.name), record_id, tenant, f"its body cannot be opened ({type(exc).__name__})")


def _namespaces_query(tenant: str, now: datetime) -> sa.Select:
    """The tenant's namespaces with their records live at `now`, as `_listed_namespace` reads them."""
    ns, r = memory_namespaces.c, memory_records.c
    live = sa.and_(r.namespace_id == ns.id, sa.or_(r.expires_at.is_(None), r.expires_at > now))
    count = sa.select(sa.func.count()).select_from(memory_records).where(live).scalar_subquery()
    return sa.select(
        ns.id,
        ns.agent_id,
        ns.user_id,
        ns.default_ttl_s,
        ns.created_at,
        ns.updated_at,
        count,
        ns.embedding_model,
        ns.embedding_dim,
        ns.tenant_id,  # names the tenant of a row that cannot be read
    ).where(ns.tenant_id == tenant)


def _listed_namespace(row: Any, fields: tuple[str, ...]) -> Namespace:
    """`namespaces`' row, checked: a time that is not a time is reported (row_reads), not served."""
    if not (isinstance(row[4], datetime) and isinstance(row[5], datetime)):
        raise RowProblem("created_at or updated_at is not a time")
    return Namespace(row[0], row[1], row[2], row[3], int(row[6]), as_utc(row[4]), as_utc(row[5]), row[7], row[8])


@dataclass(slots=True)
class Hit:
    record: MemoryRecord
    score: float  # reciprocal-rank-fusion score: only its order means something
    similarity: float  # cosine similarity of the record's embedding with the query's


@dataclass(slots=True)
class NewRecord:
    text: str
    metadata: Meta
    ttl_s: int | None = None  # None: the namespace's default TTL (itself None: kept until deleted)


@dataclass(slots=True)
class _Cached:
    index: NamespaceIndex
    space: Space | None  # the namespace's embedding space when the index was made (None: nothing embedded)
    used: float = 0.0
    # What answers need besides the index: id -> text, id -> (created_at, expires_at).
    texts: dict[str, str] = field(default_factory=dict)
    times: dict[str, tuple[datetime, datetime | None]] = field(default_factory=dict)
    # Records left out of the index because they cannot be read (a value the driver cannot decode, a body
    # that does not open): named beside each search's hits, tried again at each, dropped once deleted.
    unreadable: dict[str, Unreadable] = field(default_factory=dict)


def keyed_id(tenant: str, key: str) -> str:
    """The record id a write with idempotency key `key` gets (`mem_` and 20 of [a-z0-9], like any id):
    the same on every try, so a write repeated after a crash finds the first (`write(ids=...)`)."""
    n = int.from_bytes(hashlib.sha256(f"{tenant}\0{key}".encode()).digest()[:16], "big")
    out = []
    for _ in range(20):
        n, r = divmod(n, 36)
        out.append(_ID_CHARS[r])
    return "mem_" + "".join(out)


_ID_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(at: datetime | None) -> float:
    return float("inf") if at is None else as_utc(at).timestamp()


def _offline(space: Space | None) -> bool:
    return space is not None and space.model.startswith(OFFLINE_PREFIX)


def _same(a: Space | None, b: Space | None) -> bool:
    """Whether vectors of `a` and `b` may be compared: the same model and dimension (any two offline
    spaces are the offline model here: records of another are re-embedded when loaded)."""
    if a is None or b is None:
        return a is b
    return (_offline(a) and _offline(b)) or (a.model == b.model and a.dim == b.dim)


def _dims(space: Space | None) -> tuple[str, int] | None:
    return None if space is None else (space.model, space.dim)


def _space_of(model: str | None, dim: int | None) -> Space | None:
    return None if model is None or dim is None else Space(model, int(dim))


_Changes = tuple[Sequence[Any], list[str]]
# A read as the statements it runs: each `yield` hands over a statement and its parameters and gets its rows
# back; the return value is the read's. Written once, run on the SQLite reader thread, through the async
# engine, or on PostgreSQL's held connections (storage/pg_reads.py), whichever the store has.
_Read = Generator[tuple[sa.Select[Any], dict[str, Any]], Sequence[Any], T]

_ns, _r, _t = memory_namespaces.c, memory_records.c, memory_tombstones.c
_HEAD = sa.select(_ns.id, _ns.next_seq, _ns.embedding_model, _ns.embedding_dim).where(
    _ns.tenant_id == sa.bindparam("tenant"), _ns.agent_id == sa.bindparam("agent"), _ns.user_id == sa.bindparam("user")
)
_RECORDS = (
    sa.select(_r.id, _r.seq, _r.created_at, _r.expires_at, _r.body)
    .where(_r.namespace_id == sa.bindparam("ns"), _r.seq > sa.bindparam("after"), _r.seq <= sa.bindparam("head"))
    .order_by(_r.seq)
    .limit(LOAD_BATCH)
)
# A tenant's records and their bytes, through its namespaces (indexed by tenant) and each one's records (by
# namespace and seq): no scan of every tenant's records.
_TENANT_TOTALS = (
    sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(_r.size), 0))
    .select_from(memory_namespaces)
    .join(memory_records, _r.namespace_id == _ns.id)
    .where(_ns.tenant_id == sa.bindparam("tenant"))
)
_GONE = sa.select(_t.record_id).where(
    _t.namespace_id == sa.bindparam("ns"), _t.seq > sa.bindparam("since"), _t.seq <= sa.bindparam("head")
)


def _changes(ns_id: str, since: int, after: int, head: int) -> _Read[_Changes]:
    """A batch of the namespace's records numbered after `after` up to `head`; with the last batch, the ids
    of the records deleted after `since` (their tombstones)."""
    rows = yield _RECORDS, {"ns": ns_id, "after": after, "head": head}
    gone: list[str] = []
    if len(rows) < LOAD_BATCH:  # the last batch: the tombstones come with it
        gone = [row[0] for row in (yield _GONE, {"ns": ns_id, "since": since, "head": head})]
    return rows, gone


def _namespace_row(key: tuple[str, str, str]) -> _Read[Any]:
    """The namespace's row (id, next sequence number, embedding space), or None."""
    tenant, agent_id, user_id = key
    found = yield _HEAD, {"tenant": tenant, "agent": agent_id, "user": user_id}
    return found[0] if found else None


def _probe(key: tuple[str, str, str], known: tuple[str, int] | None) -> _Read[tuple[Any, tuple[int, _Changes] | None]]:
    """The namespace's row and, when this replica's index of it (`known`: its namespace id and `seq`) is
    behind, the first batch of what changed, in the same read: a search after a write pays one read."""
    row = yield from _namespace_row(key)
    if row is None or known is None or known[0] != row.id:
        return row, None
    since, head = known[1], int(row.next_seq) - 1
    return row, ((since, (yield from _changes(row.id, since, since, head))) if since < head else None)


def _drive(read: _Read[T], conn: Connection) -> T:
    """Run `read` on a synchronous connection."""
    try:
        stmt, params = next(read)
        while True:
            stmt, params = read.send(conn.execute(stmt, params).all())
    except StopIteration as done:
        return cast(T, done.value)


class _Moved(Exception):
    """A concurrent first write gave the namespace another embedding space: embed again, in that one."""

    def __init__(self, space: Space) -> None:
        self.space = space


class MemoryStore(StoreBase):
    def __init__(
        self,
        engine: AsyncEngine,
        keyring: Keyring,
        embedder: Callable[[], Embedder],
        *,
        routed: Routed | None = None,
        prefix: bool = False,
        max_records_in_memory: int = 1_000_000,
        limits: MemoryConfig | None = None,
    ) -> None:
        super().__init__(engine)
        limits = limits if limits is not None else MemoryConfig()
        # a tenant's records at most (state/tenant_quota.py)
        self.quota = TenantQuota(limits.tenant_limits, self.tenant_totals, limits.per_tenant_refresh_s)
        self._most_namespaces = limits.tenant_namespaces
        self.keyring = keyring
        self._make_embedder = embedder
        self._routed = routed  # memory.embeddings.model: new namespaces are embedded by a routed deployment
        self._prefix = prefix  # the routed model is a Matryoshka model (memory.embeddings.matryoshka)
        self._embedder: Embedder | None = None
        self._embedder_lock = asyncio.Lock()
        self._max_records = max_records_in_memory
        self._cache: OrderedDict[tuple[str, str, str], _Cached] = OrderedDict()
        self._locks: NamespaceLocks[tuple[str, str, str]] = NamespaceLocks(MAX_IDLE_LOCKS)
        # SQLite (a file): the per-search freshness read goes to the store's reader thread, one hop instead
        # of the async driver's several (StoreBase._read_whole, storage/sqlite_readers.py).
        # PostgreSQL: the same read as one statement at a time on connections held for it, one round trip each
        # instead of the engine's four (storage/pg_reads.py).
        self._held = HeldReads(engine) if not self._sqlite else None
        # Searches, index loads and long embeddings: threads of memory's own, a share of them per tenant.
        self._threads = TenantThreads(limits.threads, limits.threads_per_tenant, name="mh-memory")

    async def close(self) -> None:
        self._threads.close()
        await self.close_readers()
        held, self._held = self._held, None
        if held is not None:
            await held.close()

    # -- embedding ------------------------------------------------------------------------------
    async def embedder(self) -> Embedder:
        """The model, loaded on first use (off the event loop: ~0.5 s to read its weights)."""
        if self._embedder is None:
            async with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = await asyncio.to_thread(self._make_embedder)
        return self._embedder

    async def _embed(self, tenant: str, texts: list[str]) -> np.ndarray:
        model = await self.embedder()
        if sum(len(t) for t in texts) > 20_000:  # ~2 ms of work: off the event loop
            return await self._threads.run(tenant, model.embed, texts)
        return model.embed(texts)

    async def _vectors(
        self, tenant: str, texts: list[str], space: Space | None, caller: Caller | None, purpose: str
    ) -> tuple[np.ndarray, Space]:
        """`texts` embedded in `space` (None: a new namespace's, the configured source's), and the space.
        An offline space is the offline model here; any other is a routed deployment's, as `caller`'s calls."""
        await _modules_loaded()
        if (space is None and self._routed is not None) or (space is not None and not _offline(space)):
            if self._routed is None:
                assert space is not None
                raise SpaceUnavailable(
                    space, "this gateway embeds memory with its offline model (memory.embeddings.model is not set)"
                )
            if caller is None:
                raise ValueError("a routed memory embedding needs its caller")
            vectors, made = await self._routed.embed(texts, space, caller, purpose=purpose)
            return vectors, Space(made.model, made.dim, self._prefix)
        model = await self.embedder()
        return await self._embed(tenant, texts), Space(model.name, model.dim, True)

    def _index_space(self, space: Space | None) -> Space | None:
        """The space an index of a namespace holds: an offline namespace is indexed by the offline model here."""
        if space is None or not _offline(space):
            return None if space is None else Space(space.model, space.dim, self._prefix)
        model = self._embedder
        return Space(model.name, model.dim, True) if model is not None else space

    # -- writes ---------------------------------------------------------------------------------
    async def write(
        self,
        tenant: str,
        agent_id: str,
        user_id: str,
        records: Sequence[NewRecord],
        *,
        ids: Sequence[str] | None = None,
        caller: Caller | None = None,
    ) -> list[MemoryRecord]:
        """Store `records` in the namespace (created on first write), in one transaction. `ids`: the
        records' ids (`keyed_id`), each written only if no record of that id is there nor was deleted
        from the namespace within a day (its tombstone): the records written now are returned.

        The records are embedded in the namespace's space (a new namespace's is the configured source's,
        recorded now) before the transaction; `caller` makes routed embeddings its calls."""
        await _modules_loaded()
        keyed = ids is not None
        ids = list(ids) if ids is not None else [new_id("mem") for _ in records]
        space = await self._namespace_space(tenant, agent_id, user_id)
        for _ in range(2):  # a concurrent first write may have given the namespace another space: once more in it
            try:
                return await self._write_records(tenant, agent_id, user_id, records, ids, keyed, space, caller)
            except _Moved as moved:
                space = moved.space
        raise SpaceUnavailable(space or Space("?", 0), "the namespace's embedding model changed twice during one write")

    async def _namespace_space(self, tenant: str, agent_id: str, user_id: str) -> Space | None:
        row = await self._run_read(_namespace_row((tenant, agent_id, user_id)))
        return None if row is None else _space_of(row.embedding_model, row.embedding_dim)

    async def _write_records(
        self,
        tenant: str,
        agent_id: str,
        user_id: str,
        records: Sequence[NewRecord],
        ids: list[str],
        keyed: bool,
        space: Space | None,
        caller: Caller | None,
    ) -> list[MemoryRecord]:
        from .numeric import np

        # The data key first (a dict lookup when cached): a KMS that cannot seal is refused before the embedding
        # call is made (and billed, when routed), not after.
        await self.keyring.ready(tenant, PURPOSE)
        vectors, made = await self._vectors(tenant, [r.text for r in records], space, caller, "records")
        now = _now()
        sealed: list[tuple[bytes, int]] = []
        for rid, rec, vec in zip(ids, records, vectors, strict=True):
            plain = _encode(_Body(rec.text, rec.metadata, made.model, vec.astype(np.float16).tobytes()))
            sealed.append((await self.keyring.seal(tenant, PURPOSE, TABLE, rid, plain), len(plain)))
        # (a keyed write's records already there count too: a retry at the limit is refused, conservative)
        async with (
            self.quota.holding(tenant, len(sealed), sum(size for _, size in sealed)),
            self._write(lock=f"memory:{tenant}:{agent_id}:{user_id}") as conn,
        ):
            ns_id, ttl, held = await self._namespace(conn, tenant, agent_id, user_id, now, create=True)
            first = await self._take_seqs(conn, ns_id, len(records), now)
            if first is None:  # the namespace was deleted (a user forgotten) since the read: a new one
                ns_id, ttl, held = await self._namespace(conn, tenant, agent_id, user_id, now, create=True)
                first = await self._take_seqs(conn, ns_id, len(records), now)
                assert first is not None  # created in this transaction
            if held is None:  # the namespace's first vectors: its space from now on
                ns = memory_namespaces.c
                await conn.execute(
                    sa.update(memory_namespaces)
                    .where(ns.id == ns_id)
                    .values(embedding_model=made.model, embedding_dim=made.dim)
                )
            elif not _same(held, made):  # raised inside the transaction: it rolls back, nothing is written
                raise _Moved(held)
            if keyed:  # under the namespace's lock: a second try of the same write finds the first
                known = await self._known(conn, tenant, ns_id, ids)
                todo = [(rid, rec, sb) for rid, rec, sb in zip(ids, records, sealed, strict=True) if rid not in known]
            else:
                todo = list(zip(ids, records, sealed, strict=True))
            out: list[MemoryRecord] = []
            rows = []
            for i, (rid, rec, (body, size)) in enumerate(todo):
                ttl_s = rec.ttl_s if rec.ttl_s is not None else ttl
                expires = now + timedelta(seconds=ttl_s) if ttl_s is not None else None
                rows.append(
                    {
                        "id": rid,
                        "namespace_id": ns_id,
                        "tenant_id": tenant,
                        "seq": first + i,
                        "created_at": now,
                        "expires_at": expires,
                        "size": size,
                        "body": body,
                    }
                )
                out.append(MemoryRecord(rid, agent_id, user_id, rec.text, rec.metadata, now, expires))
            if rows:
                await conn.execute(sa.insert(memory_records), rows)
        self.quota.added(tenant, len(todo), sum(size for _, _, (_, size) in todo))
        return out

    async def tenant_totals(self, tenant: str) -> tuple[int, int]:
        """The tenant's records (expired ones not yet swept too): how many, and their plaintext bytes."""
        async with self._read() as conn:
            row = (await conn.execute(_TENANT_TOTALS, {"tenant": tenant})).one()
        return int(row[0]), int(row[1])

    @staticmethod
    async def _known(conn: AsyncConnection, tenant: str, ns_id: str, ids: list[str]) -> set[str]:
        """Those of `ids` that are records of the tenant, or were deleted from the namespace (tombstones)."""
        r, t = memory_records.c, memory_tombstones.c
        live = sa.select(r.id).where(r.tenant_id == tenant, r.id.in_(ids))
        gone = sa.select(t.record_id).where(t.namespace_id == ns_id, t.record_id.in_(ids))
        return {row[0] for row in (await conn.execute(sa.union(live, gone))).all()}

    async def _namespace(
        self, conn: AsyncConnection, tenant: str, agent_id: str, user_id: str, now: datetime, *, create: bool
    ) -> tuple[str, int | None, Space | None]:
        ns = memory_namespaces.c
        row = (
            await conn.execute(
                sa.select(ns.id, ns.default_ttl_s, ns.embedding_model, ns.embedding_dim).where(
                    ns.tenant_id == tenant, ns.agent_id == agent_id, ns.user_id == user_id
                )
            )
        ).first()
        if row is not None:
            return row.id, row.default_ttl_s, _space_of(row.embedding_model, row.embedding_dim)
        if not create:
            raise LookupError("no such namespace")
        await self._refuse_past_namespaces(conn, tenant)
        ns_id = new_id("mns")
        await conn.execute(
            sa.insert(memory_namespaces).values(
                id=ns_id,
                tenant_id=tenant,
                agent_id=agent_id,
                user_id=user_id,
                default_ttl_s=None,
                next_seq=1,
                created_at=now,
                updated_at=now,
            )
        )
        return ns_id, None, None

    async def _refuse_past_namespaces(self, conn: AsyncConnection, tenant: str) -> None:
        """TenantStorageFull when the tenant holds `max_namespaces` already: counted under the tenant's lock
        (PostgreSQL; SQLite serializes writes), so new namespaces made at once cannot all find room. Only a new
        namespace pays for the count."""
        most = self._most_namespaces(tenant)
        if most is None:
            return
        await hold_lock(conn, f"memory_namespaces:{tenant}")
        ns = memory_namespaces.c
        held = await conn.scalar(
            sa.select(sa.func.count()).select_from(memory_namespaces).where(ns.tenant_id == tenant)
        )
        if held is not None and held >= most:
            raise TenantStorageFull(tenant, "namespaces", most, held + 1)

    @staticmethod
    async def _take_seqs(conn: AsyncConnection, ns_id: str, count: int, now: datetime) -> int | None:
        """The first of `count` sequence numbers of the namespace, taken under its row lock (so the
        changes commit in the order of their numbers, which is what catch-up reads rely on); None if
        the namespace is gone."""
        ns = memory_namespaces.c
        after = (
            await conn.execute(
                sa.update(memory_namespaces)
                .where(ns.id == ns_id)
                .values(next_seq=ns.next_seq + count, updated_at=now)
                .returning(ns.next_seq)
            )
        ).scalar()
        return None if after is None else int(after) - count

    async def delete(self, tenant: str, record_id: str) -> bool:
        r = memory_records.c
        async with self._write() as conn:
            row = (
                await conn.execute(sa.select(r.namespace_id, r.size).where(r.id == record_id, r.tenant_id == tenant))
            ).first()
            if row is None:
                return False
            deleted = await self._tombstone(conn, row.namespace_id, [record_id], _now())
        if deleted:
            self.quota.removed(tenant, 1, row.size)
        return deleted

    async def _tombstone(self, conn: AsyncConnection, ns_id: str, ids: list[str], now: datetime) -> bool:
        """Delete the records and leave their tombstones; False if the namespace went meanwhile (with them)."""
        r = memory_records.c
        await conn.execute(sa.delete(memory_records).where(r.namespace_id == ns_id, r.id.in_(ids)))
        first = await self._take_seqs(conn, ns_id, len(ids), now)
        if first is None:
            return False
        await conn.execute(
            sa.insert(memory_tombstones),
            [
                {"namespace_id": ns_id, "seq": first + i, "record_id": rid, "created_at": now}
                for i, rid in enumerate(ids)
            ],
        )
        return True

    async def set_namespace(self, tenant: str, agent_id: str, user_id: str, default_ttl_s: int | None) -> Namespace:
        """Create the namespace if new; set the TTL given to records written afterwards without one."""
        now = _now()
        async with self._write(lock=f"memory:{tenant}:{agent_id}:{user_id}") as conn:
            ns = memory_namespaces.c
            # PostgreSQL: the namespace read may be deleted (a user forgotten) before the update takes its row;
            # then it is made again, as a write makes it (the second pass creates it in this transaction).
            for _ in range(2):
                ns_id, _, _ = await self._namespace(conn, tenant, agent_id, user_id, now, create=True)
                set_ttl = sa.update(memory_namespaces).where(ns.id == ns_id)
                if (await conn.execute(set_ttl.values(default_ttl_s=default_ttl_s, updated_at=now))).rowcount:
                    break
            # Read in this transaction: a delete committed just after it (a forget-user, another replica's)
            # must not leave the answer nothing to read.
            q = _namespaces_query(tenant, now).where(ns.id == ns_id)
            return await row_reads.read_one(
                conn, q, memory_namespaces, _listed_namespace, "memory namespace", ns_id, tenant
            )

    async def delete_namespace(self, tenant: str, agent_id: str, user_id: str) -> int | None:
        """Delete the namespace and every record in it; the number of records, or None if there was none."""
        ns = memory_namespaces.c
        where = sa.and_(ns.tenant_id == tenant, ns.agent_id == agent_id, ns.user_id == user_id)
        return (await self._drop_namespaces(where))[1] if await self._exists(where) else None

    async def forget_user(self, tenant: str, user_id: str) -> tuple[int, int]:
        """Delete every namespace of `user_id` (whatever the agent) and all their records: (namespaces, records)."""
        ns = memory_namespaces.c
        return await self._drop_namespaces(sa.and_(ns.tenant_id == tenant, ns.user_id == user_id))

    async def _exists(self, where: sa.ColumnElement[bool]) -> bool:
        async with self._read() as conn:
            return (await conn.execute(sa.select(memory_namespaces.c.id).where(where).limit(1))).first() is not None

    async def _drop_namespaces(self, where: sa.ColumnElement[bool]) -> tuple[int, int]:
        ns, r, t = memory_namespaces.c, memory_records.c, memory_tombstones.c
        async with self._write() as conn:
            found = (await conn.execute(sa.select(ns.id, ns.tenant_id, ns.agent_id, ns.user_id).where(where))).all()
            ids = [row.id for row in found]
            if not ids:
                return 0, 0
            # What they free, per tenant (the tenant's quota counts it at once; no aggregate of all its records)
            freed = (
                await conn.execute(
                    sa.select(r.tenant_id, sa.func.count(), sa.func.coalesce(sa.func.sum(r.size), 0))
                    .where(r.namespace_id.in_(ids))
                    .group_by(r.tenant_id)
                )
            ).all()
            gone = (await conn.execute(sa.delete(memory_records).where(r.namespace_id.in_(ids)))).rowcount
            await conn.execute(sa.delete(memory_tombstones).where(t.namespace_id.in_(ids)))
            await conn.execute(sa.delete(memory_namespaces).where(ns.id.in_(ids)))
        for row in found:  # this replica's copies go now; the others' at their next look (the row is gone)
            self._cache.pop((row.tenant_id, row.agent_id, row.user_id), None)
        for tenant, count, size in freed:
            self.quota.removed(tenant, int(count), int(size))
        return len(ids), int(gone or 0)

    async def sweep(self, *, batch: int = 500) -> int:
        """Delete records whose TTL has passed (tombstoned like any delete) and tombstones older than
        a day; the number of records deleted. Replicas run it periodically (service.py)."""
        r, t = memory_records.c, memory_tombstones.c
        now = _now()
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    sa.select(r.id, r.namespace_id).where(r.expires_at <= now).order_by(r.expires_at).limit(batch)
                )
            ).all()
        by_ns: dict[str, list[str]] = {}
        for row in rows:
            by_ns.setdefault(row.namespace_id, []).append(row.id)
        done = 0
        for ns_id, ids in by_ns.items():
            async with self._write() as conn:
                present = (
                    (await conn.execute(sa.select(r.id).where(r.namespace_id == ns_id, r.id.in_(ids)))).scalars().all()
                )
                if present:
                    await self._tombstone(conn, ns_id, list(present), now)
                    done += len(present)
        async with self._write() as conn:
            await conn.execute(sa.delete(memory_tombstones).where(t.created_at < now - TOMBSTONE_TTL))
        if done:
            self.quota.forget()  # (tenants' totals read again: the sweep made room)
        idle = time.monotonic() - INDEX_IDLE_S
        for key in [k for k, c in self._cache.items() if c.used < idle]:
            self._cache.pop(key, None)
        self._drop_idle_locks()
        return done

    # -- reads ----------------------------------------------------------------------------------
    async def _open(self, tenant: str, record_id: str, sealed: bytes) -> _Body:
        return _decode.decode(await self.keyring.open(tenant, PURPOSE, TABLE, record_id, stored_bytes(sealed)))

    def _record_query(self) -> sa.Select[Any]:
        r, ns = memory_records.c, memory_namespaces.c
        return sa.select(
            r.id, r.seq, r.created_at, r.expires_at, r.body, ns.agent_id, ns.user_id, r.tenant_id
        ).join_from(memory_records, memory_namespaces, r.namespace_id == ns.id)

    async def _opened(self, row: Any) -> MemoryRecord:
        """The record of `row`; UnreadableRow (409, naming it) if its body does not open (sealed for another
        row, cut short) or is not a record."""
        try:
            body = await self._open(row.tenant_id, row.id, row.body)
        except KmsError:
            raise  # the KMS's answer (503 unavailable, refused), not the row's
        except (CryptoError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise row_reads.unreadable("memory record", _unopened(row.id, row.tenant_id, exc)) from None
        return MemoryRecord(
            row.id, row.agent_id, row.user_id, body.text, body.metadata, as_utc(row.created_at), as_utc(row.expires_at)
        )

    async def get(self, tenant: str, record_id: str) -> MemoryRecord | None:
        r = memory_records.c
        now = _now()
        q = self._record_query().where(
            r.id == record_id, r.tenant_id == tenant, sa.or_(r.expires_at.is_(None), r.expires_at > now)
        )
        async with self._read() as conn:
            row, bad = await row_reads.first(conn, q, memory_records)
        if bad is not None:
            raise row_reads.unreadable("memory record", bad)
        return None if row is None else await self._opened(row)

    async def page(
        self,
        tenant: str,
        agent_id: str,
        user_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        desc: bool = True,
        keep: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> tuple[row_reads.Listed[MemoryRecord], bool] | None:
        """A page of the namespace's live records in write order (newest first unless `desc` is False),
        after the record `after`; with `keep`, only records whose metadata it accepts. None: no such namespace.
        A record that cannot be read (a value the driver cannot decode, a body that does not open) in the
        stretch the page covers is named in `.unreadable`, in its place, and the page goes on past it."""
        r, ns = memory_records.c, memory_namespaces.c
        now = _now()
        async with self._read() as conn:
            ns_id = (
                await conn.execute(
                    sa.select(ns.id).where(ns.tenant_id == tenant, ns.agent_id == agent_id, ns.user_id == user_id)
                )
            ).scalar()
            if ns_id is None:
                return None
            cursor = None
            if after is not None:
                cursor = (await conn.execute(sa.select(r.seq).where(r.id == after, r.namespace_id == ns_id))).scalar()
                if cursor is None:
                    raise KeyError(after)
            out: row_reads.Listed[MemoryRecord] = row_reads.Listed()
            unreadable: list[tuple[int, Unreadable]] = []  # each with the page's records before it
            try:
                while True:
                    q = self._record_query().where(
                        r.namespace_id == ns_id, sa.or_(r.expires_at.is_(None), r.expires_at > now)
                    )
                    if cursor is not None:
                        q = q.where(r.seq < cursor if desc else r.seq > cursor)
                    step = limit + 1 if keep is None else max(100, limit + 1)
                    q = q.order_by(r.seq.desc() if desc else r.seq).limit(step)
                    rows, bad = await rows_of(conn, q, memory_records)
                    walk: Sequence[Any] = rows if not bad else await _in_order(conn, q, rows, bad)
                    for row in walk:
                        if bad and type(row) is _Skipped:  # named in its place (its seq, a plain integer, reads)
                            cursor = row.seq
                            unreadable.append((len(out), row.unreadable))
                            continue
                        cursor = row.seq
                        try:
                            rec = await self._opened(row)
                        except UnreadableRow as exc:
                            bad_row = Unreadable(str(memory_records.name), row.id, tenant, exc.problem)
                            unreadable.append((len(out), bad_row))
                            continue
                        if keep is None or keep(rec.metadata):
                            if len(out) == limit:
                                # one after the page's last record is the next page's to name (it starts there)
                                if unreadable:
                                    unreadable = [u for u in unreadable if u[0] < limit]
                                return out, True
                            out.append(rec)
                    if len(rows) + len(bad) < step:
                        return out, False
            finally:
                if unreadable:
                    out.unreadable = tuple(u for _, u in unreadable)

    async def namespaces(
        self,
        tenant: str,
        limit: int,
        after: str | None = None,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
    ) -> row_reads.Page[Namespace]:
        """A page of the tenant's namespaces (optionally one agent's or one user's) by agent and user, after the
        cursor `after` (namespace_pages.py: a place, so a namespace deleted since is none), with their live record counts; `.unreadable` the page's rows that cannot
        be read (storage/row_reads.py). A tenant may hold 100,000 namespaces: they are read a page at a time."""
        ns = memory_namespaces.c
        q = _namespaces_query(tenant, _now())
        if agent_id is not None:
            q = q.where(ns.agent_id == agent_id)
        if user_id is not None:
            q = q.where(ns.user_id == user_id)
        async with self._read() as conn:
            ids, more, last = await namespace_pages.page_ids(conn, q, limit, after)
            ordered = q.where(ns.id.in_(ids)).order_by(*namespace_pages.ORDER)
            listed = await row_reads.read_all(conn, ordered, memory_namespaces, _listed_namespace) if ids else None
        out: row_reads.Page[Namespace] = row_reads.Page(listed or ())
        out.unreadable, out.more, out.last = (listed.unreadable if listed is not None else ()), more, last
        return out

    async def usage(self, tenant: str, limit: int, after: str | None = None) -> row_reads.Page[dict[str, Any]]:
        """What each of a page of the tenant's namespaces holds (by agent and user, after the cursor `after`, as
        `namespaces`), for operators: live records, their bodies' bytes and the oldest and newest write. The
        page's namespaces are read first, then one grouped read of their clear columns; nothing is opened. Rows
        SQLite holds with a time or size not of its type are left out (row_reads.misfits) and listed in the
        first page's `unreadable`."""
        ns, r = memory_namespaces.c, memory_records.c
        now = _now()
        fitting_ns = row_reads.fitting(self.engine, _NS_MISFITS)
        fitting = row_reads.fitting(self.engine, _RECORD_MISFITS)
        live = sa.and_(r.namespace_id == ns.id, sa.or_(r.expires_at.is_(None), r.expires_at > now))
        q = (
            sa.select(
                ns.agent_id,
                ns.user_id,
                ns.default_ttl_s,
                ns.updated_at,
                sa.func.count(r.id),
                sa.func.coalesce(sa.func.sum(r.size), 0),
                sa.func.min(r.created_at),
                sa.func.max(r.created_at),
            )
            .select_from(memory_namespaces.outerjoin(memory_records, sa.and_(live, *fitting)))
            .group_by(ns.id, ns.agent_id, ns.user_id, ns.default_ttl_s, ns.updated_at)
            .order_by(ns.agent_id, ns.user_id, ns.id)
        )
        mine = sa.select(memory_namespaces).where(ns.tenant_id == tenant, *fitting_ns)
        async with self._read() as conn:
            page, more, last = await namespace_pages.page_ids(conn, mine, limit, after)
            rows = (await conn.execute(q.where(ns.id.in_(page)))).all() if page else []
            unreadable: tuple[Unreadable, ...] = ()
            if after is None:
                where = [memory_namespaces.c.tenant_id == tenant]
                unreadable = await row_reads.misfit_rows(conn, memory_namespaces, _NS_MISFITS, where)
                unreadable += await row_reads.misfit_rows(
                    conn, memory_records, _RECORD_MISFITS, [r.tenant_id == tenant]
                )
        out: row_reads.Page[dict[str, Any]] = row_reads.Page(
            {
                "agent_id": row[0],
                "user_id": row[1],
                "default_ttl_s": row[2],
                "records": int(row[4]),
                "bytes": int(row[5]),
                "oldest_at": as_utc(row[6]),
                "newest_at": as_utc(row[7]),
                "updated_at": as_utc(row[3]),
            }
            for row in rows
        )
        out.unreadable, out.more, out.last = unreadable, more, last
        return out

    # -- search ---------------------------------------------------------------------------------
    async def search(
        self,
        tenant: str,
        agent_id: str,
        user_id: str,
        query: str,
        *,
        top_k: int = 10,
        keep: Callable[[Mapping[str, Any]], bool] | None = None,
        mode: str = "hybrid",
        caller: Caller | None = None,
    ) -> row_reads.Listed[Hit]:
        """The namespace's `top_k` records best matching `query` (hybrid: embedding and BM25 fused);
        empty for a namespace that does not exist. The query is embedded in the namespace's space
        (`caller` makes a routed embedding its call)."""
        await _modules_loaded()
        from .index import EXACT_UPTO, terms

        key = (tenant, agent_id, user_id)
        qvec: np.ndarray | None = None
        known = self._cache.get(key)
        for _ in range(2):  # twice when the namespace was deleted and written anew while the query was embedded
            if mode != "keyword":
                if known is None or known.space is None:  # the namespace's space is on its row: read it first
                    async with self._lock(key):  # (a rebuild on a thread changes the index)
                        known = await self._fresh(key)
                    if known is None or known.space is None:  # no namespace, or nothing in it was ever embedded
                        return row_reads.Listed()
                try:
                    qvec = (await self._vectors(tenant, [query], known.space, caller, "query"))[0][0]
                except SpaceUnavailable:
                    if known is not self._cache.get(key) or not await self._moved(key, known):
                        raise
                    known = None  # the namespace was moved to another model (reembed.py) since this index was made
                    continue
            async with self._lock(key):  # taken anew: the one before the embedding may have been dropped
                cached = await self._fresh(key)
                if cached is None:
                    return row_reads.Listed()
                if qvec is not None and known is not None and not _same(cached.space, known.space):
                    known = None
                    continue
                index = cached.index
                args = (qvec, terms(query), top_k)
                if len(index) > EXACT_UPTO:  # milliseconds of numpy (which lets go of the GIL): off the event loop
                    found = await self._threads.run(tenant, index.search, *args, now=time.time(), keep=keep, mode=mode)
                else:
                    found = index.search(*args, now=time.time(), keep=keep, mode=mode)
                break
        else:
            return row_reads.Listed()
        hits: row_reads.Listed[Hit] = row_reads.Listed()
        for rid, score, sim in found:
            created, expires = cached.times[rid]
            meta = dict(index.meta[index.pos[rid]])
            hits.append(
                Hit(MemoryRecord(rid, agent_id, user_id, cached.texts[rid], meta, created, expires), score, sim)
            )
        hits.unreadable = tuple(cached.unreadable.values())  # searched without them: named, never a value
        return hits

    async def _moved(self, key: tuple[str, str, str], known: _Cached) -> bool:
        """Whether the namespace's model is no longer the one `known` (this replica's index) was made of."""
        async with self._lock(key):
            fresh = await self._fresh(key)
        return fresh is None or _dims(fresh.space) != _dims(known.space)

    def _lock(self, key: tuple[str, str, str]) -> NamespaceLock:
        """The namespace's lock, taken from the map each time it is entered (locks.py)."""
        return self._locks.get(key, self._cache)

    def _drop_idle_locks(self) -> None:
        """Forget the locks of namespaces this replica holds no index of and nobody holds or waits for (as
        the sweep does each minute): each search of a namespace that does not exist made one, so a caller
        naming a new one per search grew the map by its request rate until the next sweep."""
        self._locks.drop_idle(self._cache)

    async def _fresh(self, key: tuple[str, str, str]) -> _Cached | None:
        """This replica's index of the namespace, caught up with every committed change (the caller
        holds the namespace's lock)."""
        await _modules_loaded()
        tenant, agent_id, user_id = key
        known = self._cache.get(key)
        try:
            row, first = await self._run_read(
                _probe(key, (known.index.namespace_id, known.index.seq) if known is not None else None)
            )
        except DECODE_ERRORS as exc:
            if known is None:
                raise _undecodable(key, exc) from None
            try:  # the namespace's row alone: a record of the changes may be the one (read row by row below)
                row, first = await self._run_read(_probe(key, None))
            except DECODE_ERRORS as exc:
                raise _undecodable(key, exc) from None
        if row is None:
            self._cache.pop(key, None)
            return None
        cached = self._cache.get(key)
        space = _space_of(row.embedding_model, row.embedding_dim)
        if _offline(space) and self._embedder is None:  # the offline model's dimension is the index's
            await self.embedder()
        held = self._index_space(space)
        # A new namespace, its first vectors, or a move to another model (reembed.py): a new index.
        if cached is None or cached.index.namespace_id != row.id or _dims(cached.space) != _dims(held):
            from .index import NamespaceIndex

            index = NamespaceIndex(held.dim if held is not None else 1, held.prefix if held is not None else True)
            index.namespace_id = row.id
            cached = _Cached(index, held)
            self._cache[key] = cached
        head = int(row.next_seq) - 1
        if cached.index.seq < head:
            ahead = first[1] if first is not None and cached is known and first[0] == cached.index.seq else None
            await self._catch_up(tenant, cached, head, ahead)
        if cached.unreadable:
            await self._reread(tenant, cached)
        if self._cache.get(key) is not cached:
            # Dropped meanwhile: a delete of its namespace on this replica (which takes no namespace lock).
            # The search answers from what it read, before that delete; the index is not kept.
            return cached
        self._cache.move_to_end(key)
        cached.used = time.monotonic()
        if cached.index.needs_rebuild():
            await self._threads.run(tenant, cached.index.rebuild)
        self._evict(key)
        return cached

    async def _run_read(self, read: _Read[T], short: bool = True) -> T:
        """`read`: on PostgreSQL's held connections (a round trip per statement), on the SQLite reader thread
        (one hop), or through the async engine (a SQLite database in memory). `short=False` (an index's
        load, up to LOAD_BATCH records a batch): through the engine's pool on PostgreSQL too, so a replica
        loading large namespaces never holds up every tenant's freshness reads behind two connections."""
        if self._held is not None and short:
            try:
                stmt, params = next(read)
                while True:
                    stmt, params = read.send(await self._held.fetch(stmt, params))
            except StopIteration as done:
                return cast(T, done.value)
        return await self._read_whole(partial(_drive, read))

    async def _catch_up(self, tenant: str, cached: _Cached, head: int, first: _Changes | None = None) -> None:
        """Apply the namespace's changes numbered after the index's `seq` up to `head`: records first,
        then tombstones (a record deleted meanwhile is read, then removed), a batch per read. `first`:
        the first batch, read already (`_fresh`'s probe)."""
        index = cached.index
        model = await self.embedder() if _offline(cached.space) else None
        since, ns_id = index.seq, index.namespace_id
        start = since

        while True:
            if first is not None:
                (rows, gone), first = first, None
                n, last = len(rows), (rows[-1].seq if rows else start)
            else:
                try:
                    rows, gone = await self._run_read(_changes(ns_id, since, start, head), short=False)
                    n, last = len(rows), (rows[-1].seq if rows else start)
                except DECODE_ERRORS:
                    rows, gone, n, last = await self._changes_by_row(tenant, cached, since, start, head)
            await self._load(tenant, cached, model, rows)
            if n < LOAD_BATCH:
                break
            start = last
        for rid in gone:
            index.remove(rid)
            cached.times.pop(rid, None)
            cached.texts.pop(rid, None)
            cached.unreadable.pop(rid, None)
        index.seq = head

    async def _load(self, tenant: str, cached: _Cached, model: Embedder | None, rows: Sequence[Any]) -> None:
        """Open `rows` and put them in the index; one that does not open is named in `cached.unreadable`."""
        plain: list[bytes] = []
        opened: list[Any] = []
        for row in rows:
            try:
                plain.append(await self.keyring.open(tenant, PURPOSE, TABLE, row.id, stored_bytes(row.body)))
            except KmsError:
                raise  # the KMS's answer (503 unavailable, refused), not the row's
            except CryptoError as exc:  # sealed for another row, cut short: the row's, left out and named
                cached.unreadable[row.id] = _unopened(row.id, tenant, exc)
                continue
            opened.append(row)
        if len(opened) > 64:  # decoding, stemming and indexing: off the event loop (the lock keeps searches out)
            bad = await self._threads.run(tenant, self._apply, cached, model, opened, plain)
        else:
            bad = self._apply(cached, model, opened, plain) if opened else []
        for rid, err in bad:
            cached.unreadable[rid] = _unopened(rid, tenant, err)

    async def _changes_by_row(
        self, tenant: str, cached: _Cached, since: int, after: int, head: int
    ) -> tuple[list[Any], list[str], int, int]:
        """`_changes` row by row, for a batch holding a record the driver cannot decode (SQLite keeps any
        value in any column): that one is named in `cached.unreadable`, the others are loaded. -> the rows,
        the ids deleted (with the last batch), how many the batch held and the last one's `seq`."""
        ns_id = cached.index.namespace_id
        params = {"ns": ns_id, "after": after, "head": head}
        out: list[Any] = []
        async with self._read() as conn:
            order = (await conn.execute(_RECORDS.with_only_columns(_r.id, _r.seq), params)).all()
            for rid, _ in order:
                try:
                    row = (await conn.execute(_RECORDS.where(_r.id == rid), params)).first()
                except DECODE_ERRORS as exc:
                    cached.unreadable[rid] = Unreadable(str(memory_records.name), rid, tenant, row_problem(exc))
                    continue
                if row is not None:
                    out.append(row)
            gone: list[str] = []
            if len(order) < LOAD_BATCH:
                found = await conn.execute(_GONE, {"ns": ns_id, "since": since, "head": head})
                gone = [g for (g,) in found.all()]
        return out, gone, len(order), (order[-1][1] if order else after)

    async def _reread(self, tenant: str, cached: _Cached) -> None:
        """Try the records left out as unreadable again (mended by SQL since): those that read now join the
        index; those deleted are forgotten (their tombstone may be older than the index's `seq`)."""
        ids = list(cached.unreadable)
        q = sa.select(_r.id, _r.seq, _r.created_at, _r.expires_at, _r.body, _r.tenant_id).where(
            _r.namespace_id == cached.index.namespace_id, _r.id.in_(ids)
        )
        async with self._read() as conn:
            rows, bad = await rows_of(conn, q, memory_records)
        for rid in ids:
            cached.unreadable.pop(rid, None)
        for u in bad:
            cached.unreadable[u.id] = u
        await self._load(tenant, cached, await self.embedder() if _offline(cached.space) else None, rows)

    @staticmethod
    def _apply(
        cached: _Cached, model: Embedder | None, rows: Sequence[Any], plain: list[bytes]
    ) -> list[tuple[str, Exception]]:
        """Opened records into the index. `model`: the offline model, for an offline namespace, whose
        records embedded by another offline model are embedded again. A routed namespace's records are all
        of its space (its writes make sure): one that is not (never seen) is found by keywords only."""
        from .index import terms
        from .numeric import np

        index = cached.index
        bodies: list[Any] = []
        kept: list[Any] = []
        bad: list[tuple[str, Exception]] = []
        for row, p in zip(rows, plain, strict=True):
            try:
                bodies.append(_decode.decode(p))
            except msgspec.DecodeError as exc:  # opened, but not a record: the row's, named by the caller
                bad.append((row.id, exc))
                continue
            kept.append(row)
        rows = kept
        if not rows:
            return bad
        name = model.name if model is not None else cached.space.model if cached.space is not None else ""
        stale = [i for i, b in enumerate(bodies) if b.model != name or len(b.vector) != 2 * index.dim]
        redone: dict[int, np.ndarray] = {}
        if stale and model is not None:
            redone = dict(zip(stale, model.embed([bodies[i].text for i in stale]), strict=True))
        elif stale:
            log.warning(
                "memory namespace %s: %d records not of its embedding model, left out of vector search",
                index.namespace_id,
                len(stale),
            )
        vectors = np.zeros((len(rows), index.dim), dtype=np.float32)
        skip = set(stale)
        for i, body in enumerate(bodies):
            vec = redone.get(i)
            if vec is not None:
                vectors[i] = vec
            elif i not in skip:
                vectors[i] = np.frombuffer(body.vector, dtype=np.float16)
        index.add_many(
            [row.id for row in rows],
            vectors,
            [terms(b.text) for b in bodies],
            [b.metadata for b in bodies],
            [_epoch(row.expires_at) for row in rows],
        )
        for row, body in zip(rows, bodies, strict=True):
            cached.times[row.id] = (as_utc(row.created_at), as_utc(row.expires_at))
            cached.texts[row.id] = body.text
        return bad

    def _evict(self, keep: tuple[str, str, str]) -> None:
        """Drop least recently searched indexes while the total held is over the budget (in records of
        `BUDGET_DIM` dimensions: an index of wider vectors weighs more)."""

        def weight(c: _Cached) -> int:
            # The rows allocated, not the records in them, and the index's own objects: counting records
            # alone, an index of one record weighed 1 and held ~140 kB (256 rows allocated up front), so a
            # caller searching many one-record namespaces held ~140x the budget.
            return c.index.capacity * max(1, c.index.dim) // BUDGET_DIM + NAMESPACE_WEIGHT

        total = sum(weight(c) for c in self._cache.values())
        for key in list(self._cache):
            if total <= self._max_records:
                break
            if key != keep:
                total -= weight(self._cache.pop(key))
