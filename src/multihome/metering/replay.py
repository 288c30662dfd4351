"""Replay the usage spool files a dead process left (spool.py): their rows into the database, once.

A file is a dead process's when nobody holds its flock (a live process holds each of its files
locked; the kernel drops the lock when the process dies, however it dies). `claim` takes that lock,
so two processes sharing the directory (workers of one replica, or replicas on a shared volume
whose filesystem honours flock) never replay the same file at once. Its rows go to the writer like
any other rows: the insert ignores a `request_id` already stored, so a row the dead process had
committed, or a file replayed twice, is never counted twice. Replay only writes rows; it does not
touch the budget and rate counters: the dead process counted each call in them when it settled
it (in Redis, or in its own memory, which the next start seeds from the stored rows, replayed ones
included, because `Metering.start` replays before it seeds). The file is deleted once its rows are
committed. A file is read up to its first NUL byte (the unused, preallocated rest; files of earlier
versions have none; every byte after the last row is NUL until a row is copied there, so a row cut
short by a kill mid-copy reads as a prefix of itself). A line that does not decode (such a torn last
line) is skipped with a warning; a file of another database (see `database_id`) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import msgspec

from .row import SPOOL_TYPE, Row, as_row
from .spool import MAGIC, SUFFIX

log = logging.getLogger("multihome.metering.spool")
_CHUNK = 1 << 16


class SpoolRow(msgspec.Struct, forbid_unknown_fields=False):
    """One usage_calls row as spool files of version 1 hold it (a JSON object); version 2 holds row.py's
    tuple as an array."""

    request_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    tenant_id: str
    team_id: str | None
    key_id: str
    endpoint: str
    model_group: str
    deployment: str | None
    provider: str | None
    status: int
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    estimated: bool
    latency_ms: float
    cost: str
    cost_nanos: int
    currency: str
    price_version: str
    over_budget: bool
    reasoning_tokens: int = 0  # absent from rows spooled before migration 0018


_object = msgspec.json.Decoder(SpoolRow)
_array = msgspec.json.Decoder(SPOOL_TYPE)
_header = msgspec.json.Decoder(dict)


@dataclass
class Orphan:
    """A dead process's spool file, locked by this process until `release`."""

    path: str
    fd: int
    rows: list[Row] = field(default_factory=list)
    skipped: int = 0  # lines that did not decode

    def release(self, delete: bool) -> None:
        try:
            if delete:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(self.fd)


def claim(path: str, db: str) -> Orphan | None:
    """Lock and read `path` if its process is gone and its rows belong to database `db`; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # replayed and deleted meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None  # its process is alive, or another one is replaying it
    orphan = Orphan(path, fd)
    try:
        if os.fstat(fd).st_nlink == 0:
            orphan.release(False)  # deleted by the one that replayed it between our open and our lock
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = _rows_part(f)
        if not _read(orphan, data, db):
            orphan.release(False)
            return None
    except BaseException:
        orphan.release(False)
        raise
    return orphan


def _rows_part(f: BinaryIO) -> bytes:
    """The file up to its first NUL byte: the header and the rows, without the allocated rest."""
    parts = []
    while chunk := f.read(_CHUNK):
        end = chunk.find(b"\0")
        if end >= 0:
            parts.append(chunk[:end])
            break
        parts.append(chunk)
    return b"".join(parts)


def _read(orphan: Orphan, data: bytes, db: str) -> bool:
    lines = data.split(b"\n")
    try:
        head = _header.decode(lines[0])
    except msgspec.DecodeError:
        head = {}
    if head.get(MAGIC) not in (1, 2):
        log.warning("usage spool: %s has no spool header (or one of a newer version); left alone", orphan.path)
        return False
    if head.get("db") != db:
        log.info("usage spool: %s holds rows of another database; left alone", orphan.path)
        return False
    for n, line in enumerate(lines[1:], 2):
        if not line:
            continue  # the end of the file, or a line a torn write left empty
        try:
            if line[:1] == b"[":
                orphan.rows.append(_array.decode(line))
            else:  # a file of version 1
                orphan.rows.append(as_row(msgspec.structs.asdict(_object.decode(line))))
        except msgspec.DecodeError as exc:
            orphan.skipped += 1
            last = n == len(lines) or (n == len(lines) - 1 and not lines[-1])
            log.warning(
                "usage spool: %s line %d skipped (%s%s)",
                orphan.path,
                n,
                exc,
                ": a write cut short when its process died" if last else "",
            )
    return True


def orphan_paths(directory: str, own: Callable[[str], bool]) -> list[str]:
    """The spool files in `directory` that are not this process's own (dead or alive: `claim` tells)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    paths = []
    for name in sorted(names):
        path = os.path.join(directory, name)
        if not name.endswith(SUFFIX) or own(path):
            continue
        if name.startswith("."):
            _drop_unborn(path)
        else:
            paths.append(path)
    return paths


def _drop_unborn(path: str) -> None:
    """A file a process was still creating (locked, then renamed): gone with its process if unlocked
    (and older than a minute: a live process creates it before it locks it)."""
    try:
        if time.time() - os.stat(path).st_mtime < 60:
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)  # never renamed, so it holds no row: only its header, if that
    except (BlockingIOError, FileNotFoundError):
        pass
    finally:
        os.close(fd)


async def replay(
    directory: str,
    db: str,
    own: Callable[[str], bool],
    put: Callable[[list[Row]], None],
    flush: Callable[[], Awaitable[None]],
) -> int:
    """Write the rows of every dead process's file in `directory` (through `put`, then `flush`), delete
    the files. The files are found and read on a thread. -> rows replayed."""

    def find() -> list[Orphan]:
        found = []
        for path in orphan_paths(directory, own):
            orphan = claim(path, db)
            if orphan is not None:
                found.append(orphan)
        return found

    orphans = await asyncio.to_thread(find)
    if not orphans:
        return 0
    try:
        rows = [row for o in orphans for row in o.rows]
        if rows:
            put(rows)
            await flush()
    except BaseException:
        for o in orphans:
            o.release(False)  # unlocked: the next start (or rescan) tries again
        raise
    for o in orphans:
        o.release(True)
    skipped = sum(o.skipped for o in orphans)
    log.warning(
        "usage spool: %d rows replayed from %d file(s) a stopped process left in %s%s",
        len(rows),
        len(orphans),
        directory,
        f" ({skipped} unreadable lines skipped)" if skipped else "",
    )
    return len(rows)


__all__ = ["Orphan", "SpoolRow", "claim", "orphan_paths", "replay"]
