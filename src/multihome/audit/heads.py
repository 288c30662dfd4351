"""The head registry: the newest checkpoint of every chain, kept apart from the audit directory.

Someone who can rewrite the audit directory can cut a chain and its checkpoint file back to an
earlier, validly signed state, or delete the newest chain outright: nothing in the files shows it.
So every checkpoint a writer makes is also upserted into the `audit_heads` table of the storage
database (head_publisher.py), and can be exported as JSON to a witness that the gateway's host
cannot rewrite. Each entry is the checkpoint exactly as signed, so neither the database nor the
export has to be trusted for what it says, only for not having lost entries; `verify` then
requires every chain to still reach its registered seq with its registered head.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import msgspec
import sqlalchemy as sa

from ..outage_log import first_line
from .checkpoint import Checkpoint, encode_checkpoint, parse_checkpoint

HEADS_FORMAT = "multihome.audit.heads.v1"


class HeadsError(ValueError):
    """The registry cannot be read; the message says where and why (never a password)."""


class Head(msgspec.Struct, frozen=True, kw_only=True):
    trail: str
    host: str
    checkpoint: Checkpoint


class Unreadable(msgspec.Struct, frozen=True):
    """A registry row that holds no valid checkpoint (a hand edit, a damaged database): named, never used."""

    chain: str
    trail: str
    problem: str


class Heads(list[Head]):
    """The registry's entries that can be read; `unreadable` names the rows that cannot (one such row used
    to fail every `verify` and `heads export` with nothing checked or exported)."""

    unreadable: tuple[Unreadable, ...] = ()


class HeadsExport(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    exported_at: float
    heads: list[Head]


def _table():
    from ..storage.tables import audit_heads  # the storage package only when a registry is used

    return audit_heads


_UPSERTS: dict[str, sa.Executable] = {}


def upsert(dialect: str, trail: str, host: str, cps: list[Checkpoint]) -> tuple[sa.Executable, list[dict]]:
    """The statement that moves a chain's row forward to a checkpoint (never back: an older checkpoint
    arriving late leaves a newer row alone), and the parameters of `cps` for it: executed with the list
    (one transaction) it moves each chain. One statement per dialect, made once and without VALUES, so
    SQLAlchemy caches its compiled form: an INSERT with a list of VALUES has no cache key and was built
    and compiled anew at every publish (~1.5 ms of the event loop on PostgreSQL)."""
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        table = _table()
        from sqlalchemy.dialects import postgresql, sqlite  # SQLAlchemy's upsert is per dialect

        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
        moved = {c: insert.excluded[c] for c in ("seq", "head", "final", "checkpoint", "updated_at")}
        stmt = _UPSERTS[dialect] = insert.on_conflict_do_update(
            index_elements=[table.c.chain], set_=moved, where=table.c.seq <= insert.excluded.seq
        )
    now = dt.datetime.now(dt.UTC)
    rows = [
        dict(
            chain=cp.chain,
            trail=trail,
            host=host,
            seq=cp.seq,
            head=cp.head,
            final=cp.final,
            checkpoint=encode_checkpoint(cp)[:-1].decode(),
            updated_at=now,
        )
        for cp in cps
    ]
    return stmt, rows


async def read_heads(engine, trail: str | None = None) -> Heads:
    table = _table()
    query = sa.select(table.c.chain, table.c.trail, table.c.host, table.c.checkpoint).order_by(table.c.chain)
    if trail is not None:
        query = query.where(table.c.trail == trail)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    heads, bad = Heads(), []
    for row in rows:
        try:
            cp = parse_checkpoint(row.checkpoint.encode())
        except (msgspec.DecodeError, msgspec.ValidationError, AttributeError, UnicodeEncodeError):
            bad.append(
                Unreadable(
                    str(row.chain),
                    str(row.trail),
                    "its audit_heads row holds no valid checkpoint: the chain's next checkpoint rewrites it (a "
                    "running writer's); for a closed chain delete the row by SQL, or verify with a witness's "
                    "export (--heads)",
                )
            )
            continue
        heads.append(Head(trail=row.trail, host=row.host, checkpoint=cp))
    heads.unreadable = tuple(bad)
    return heads


def load_from_database(url: str, trail: str | None = None) -> Heads:
    """The registry in the database at `url` (sync, for the CLI)."""
    from ..storage.engine import create_engine

    async def run() -> Heads:
        try:
            engine = create_engine(url)
        except ValueError as exc:
            raise HeadsError(str(exc)) from None
        try:
            return await read_heads(engine, trail)
        except sa.exc.SQLAlchemyError as exc:
            safe = engine.url.render_as_string(hide_password=True)
            raise HeadsError(
                f"cannot read the head registry from {safe}: {first_line(exc)} (is the database migrated? "
                "`multihome db upgrade`)"
            ) from None
        finally:
            await engine.dispose()

    return asyncio.run(run())


def dump(heads: list[Head]) -> bytes:
    return msgspec.json.encode(HeadsExport(format=HEADS_FORMAT, exported_at=time.time(), heads=heads)) + b"\n"


def load_file(path: str) -> list[Head]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise HeadsError(f"cannot read the head registry export {path} ({exc.strerror})") from None
    try:
        export = msgspec.json.decode(data, type=HeadsExport)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HeadsError(f"{path} is not a head registry export ({exc})") from None
    if export.format != HEADS_FORMAT:
        raise HeadsError(f"{path}: format {export.format!r} is not {HEADS_FORMAT!r}")
    return export.heads
