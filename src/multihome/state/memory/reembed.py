"""Moving a memory namespace to another embedding model: every record embedded again, then one switch.

A namespace's vectors all come from one model (store.py); when the configured source changes
(`memory.embeddings.model`), a namespace of the old model is refused (409) until it is moved. `step`
does one batch of the move, and is called until it answers `completed` (the admin endpoint does one
call's worth, `multihome memory reembed` calls it until done; docs/memory.md):

- the first batch's embedding fixes the target (the configured source's model and dimension), kept on
  the namespace (`reembed_model`, `reembed_dim`); every later batch is embedded in that same space;
- a batch opens the oldest records not yet re-embedded, embeds their texts (routed embeddings are the
  caller's calls: metered, audited, under the tenant's pins, as any memory embedding), seals each record
  again with its new vector and stores it beside the current body (`next_body`), in one transaction:
  the progress is the staged bodies themselves, so a batch interrupted (kill -9) is simply done again,
  and a record written meanwhile (embedded by the current model) is staged by a later batch;
- searches and writes keep using the current bodies and model until the switch; once no record is left
  to stage, one transaction under the namespace's lock moves every staged body into place and sets the
  namespace's model: the next search on every replica sees the new model and rebuilds its index
  (store.py `_fresh`), a query already embedded by the old model is embedded again (store.py `search`).

Only what a batch lost to a kill is embedded (and billed) twice: one batch at most per interruption.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import sqlalchemy as sa

from ...crypto.envelope import stored_bytes
from ...crypto.errors import CryptoError, KmsError
from ...storage import row_reads
from ...storage.errors import NotFound
from ...storage.tables import memory_namespaces, memory_records
from .embedder import Caller, Space
from .store import PURPOSE, TABLE, _Body, _decode, _encode, _now, _same, _space_of, _unopened

if TYPE_CHECKING:
    from .store import MemoryStore

MAX_BATCH = 2000
DEFAULT_BATCH = 200


class Unchanged(ValueError):
    """The configured embedding source makes the vectors the namespace already has: nothing to move."""


@dataclass(slots=True)
class Progress:
    agent_id: str
    user_id: str
    status: str  # "running": call again; "completed": the namespace is on its new model
    from_model: str | None
    from_dim: int | None
    to_model: str | None
    to_dim: int | None
    done: int  # records re-embedded (staged) so far
    total: int  # records in the namespace now
    batch: int  # records re-embedded by this call

    def view(self) -> dict[str, Any]:
        return {
            "object": "memory.namespace.reembed",
            "agent_id": self.agent_id,
            "user_id": self.user_id,
            "status": self.status,
            "from_model": self.from_model,
            "from_dimensions": self.from_dim,
            "to_model": self.to_model,
            "to_dimensions": self.to_dim,
            "records_done": self.done,
            "records_total": self.total,
            "records_this_call": self.batch,
        }


async def step(
    store: MemoryStore, tenant: str, agent_id: str, user_id: str, *, caller: Caller | None, batch: int = DEFAULT_BATCH
) -> Progress:
    """One batch of moving the namespace to the configured embedding source, or the switch when none is
    left. NotFound: the tenant has no such namespace; Unchanged: it is on that model already."""
    ns = memory_namespaces.c
    head = sa.select(ns.id, ns.embedding_model, ns.embedding_dim, ns.reembed_model, ns.reembed_dim).where(
        ns.tenant_id == tenant, ns.agent_id == agent_id, ns.user_id == user_id
    )
    async with store._read() as conn:
        row = (await conn.execute(head)).first()
        if row is None:
            raise NotFound("memory namespace", f"agent_id={agent_id!r}, user_id={user_id!r}", tenant)
        todo = await _pending(conn, row.id, batch)
    current = _space_of(row.embedding_model, row.embedding_dim)
    target = _space_of(row.reembed_model, row.reembed_dim)
    if current is None:
        raise Unchanged("the namespace has no vectors yet: its first write embeds it with the configured model")
    if not todo:
        return await _switch(store, tenant, agent_id, user_id, row.id)
    bodies = [await _opened(store, tenant, rid, body) for rid, body in todo]
    vectors, made = await store._vectors(tenant, [b.text for b in bodies], target, caller, "records")
    if target is None and _same(made, current):
        raise Unchanged(f"the configured embedding source makes {made.model} ({made.dim} dimensions) vectors already")
    from .numeric import np

    staged = []
    for (rid, _), body, vec in zip(todo, bodies, vectors, strict=True):
        again = _encode(_Body(body.text, body.metadata, made.model, vec.astype(np.float16).tobytes()))
        staged.append({"rid": rid, "next": await store.keyring.seal(tenant, PURPOSE, TABLE, rid, again)})
    r = memory_records.c
    async with store._write(lock=f"memory:{tenant}:{agent_id}:{user_id}") as conn:
        now = (await conn.execute(head)).first()
        if now is None or now.id != row.id:
            raise NotFound("memory namespace", f"agent_id={agent_id!r}, user_id={user_id!r}", tenant)
        held = _space_of(now.reembed_model, now.reembed_dim)
        if held is None:
            await conn.execute(
                sa.update(memory_namespaces)
                .where(ns.id == row.id)
                .values(reembed_model=made.model, reembed_dim=made.dim)
            )
        elif (held.model, held.dim) != (made.model, made.dim):  # another move began meanwhile: its batches win
            return await _progress(store, row, held, agent_id, user_id, 0)
        await conn.execute(
            sa.update(memory_records)
            .where(r.id == sa.bindparam("rid"), r.namespace_id == row.id)
            .values(next_body=sa.bindparam("next")),
            staged,
        )
    return await _progress(store, row, made, agent_id, user_id, len(staged))


async def _opened(store: MemoryStore, tenant: str, record_id: str, body: Any) -> _Body:
    """A record's body to embed again; UnreadableRow (409, naming it and its mend) if it does not open (sealed
    for another row, cut short, or text: SQLite keeps any value in a blob column), as a get of it answers.
    The move cannot leave it behind (the switch needs every record staged): it waits for the mend."""
    try:
        return _decode.decode(await store.keyring.open(tenant, PURPOSE, TABLE, record_id, stored_bytes(body)))
    except KmsError:
        raise  # the KMS's answer (503 unavailable, refused), not the row's
    except (CryptoError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise row_reads.unreadable("memory record", _unopened(record_id, tenant, exc)) from None


async def _pending(conn: Any, ns_id: str, limit: int) -> list[tuple[str, bytes]]:
    r = memory_records.c
    rows = await conn.execute(
        sa.select(r.id, r.body)
        .where(r.namespace_id == ns_id, r.next_body.is_(None))
        .order_by(r.seq)
        .limit(max(1, min(limit, MAX_BATCH)))
    )
    return [(row.id, row.body) for row in rows.all()]


async def _counts(conn: Any, ns_id: str) -> tuple[int, int]:
    r = memory_records.c
    q = sa.select(sa.func.count(), sa.func.count(r.next_body)).where(r.namespace_id == ns_id)
    total, done = (await conn.execute(q)).one()
    return int(done), int(total)


async def _progress(store: MemoryStore, row: Any, to: Space, agent_id: str, user_id: str, batch: int) -> Progress:
    async with store._read() as conn:
        done, total = await _counts(conn, row.id)
    return Progress(
        agent_id, user_id, "running", row.embedding_model, row.embedding_dim, to.model, to.dim, done, total, batch
    )


async def _switch(store: MemoryStore, tenant: str, agent_id: str, user_id: str, ns_id: str) -> Progress:
    """Every record is staged: the staged bodies and the new model in place, in one transaction (under the
    namespace's lock, so no write slips in between the check and the switch)."""
    ns, r = memory_namespaces.c, memory_records.c
    async with store._write(lock=f"memory:{tenant}:{agent_id}:{user_id}") as conn:
        row = (
            await conn.execute(
                sa.select(ns.id, ns.embedding_model, ns.embedding_dim, ns.reembed_model, ns.reembed_dim).where(
                    ns.id == ns_id
                )
            )
        ).first()
        if row is None:
            raise NotFound("memory namespace", f"agent_id={agent_id!r}, user_id={user_id!r}", tenant)
        if await _pending(conn, ns_id, 1):  # written since the batch's read: staged by the next call
            done, total = await _counts(conn, ns_id)
            return Progress(
                agent_id,
                user_id,
                "running",
                row.embedding_model,
                row.embedding_dim,
                row.reembed_model,
                row.reembed_dim,
                done,
                total,
                0,
            )
        done, total = await _counts(conn, ns_id)
        when: datetime = _now()
        # An empty namespace has no vectors to keep: its next write embeds it with the configured model.
        model, dim = (row.reembed_model, row.reembed_dim) if total else (None, None)
        # The size column counts plaintext bytes: a sealed body's overhead is the same whatever it holds.
        await conn.execute(
            sa.update(memory_records)
            .where(r.namespace_id == ns_id, r.next_body.is_not(None))
            .values(
                body=r.next_body,
                next_body=None,
                size=r.size + sa.func.length(r.next_body) - sa.func.length(r.body),
            )
        )
        await conn.execute(
            sa.update(memory_namespaces)
            .where(ns.id == ns_id)
            .values(embedding_model=model, embedding_dim=dim, reembed_model=None, reembed_dim=None, updated_at=when)
        )
    return Progress(agent_id, user_id, "completed", row.embedding_model, row.embedding_dim, model, dim, done, total, 0)
