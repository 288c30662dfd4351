"""The usage spool: each usage row on local disk before its call is answered, until the database has it.

The writer (writer.py) keeps rows in memory and commits them in groups, so a process killed between
an answer and the commit (SIGKILL, the OOM killer) would lose that call's row. `append` therefore
writes the row as one JSON line, with one write() and no fsync, to a file this process owns: the
kernel's page cache outlives the process, so every row whose write() returned is read back by the
next start (replay.py), which inserts it idempotently (`request_id` is the key). A machine crash
is another matter: with `fsync_interval_ms` the files are fdatasynced that often, off the event loop.

Files: `usage-<pid>-<random>-<n>.spool` in the spool directory, each opening with a header line that
names the database its rows belong to, each held with an exclusive flock while its process lives
(created under a dot-name and renamed once locked, so no other process sees it unlocked). Rows are
committed in the order they were put, so `committed(n)` lets the oldest n go: a file whose rows
are all in the database is cut back to its header (the current one) or deleted (an older one,
after rotation at `segment_bytes`). A clean close deletes what is committed and keeps the rest for
the next start (the database was unreachable).

A second consumer of the same calls with its own queue (the contract ledger) can hold rows too:
`hold` returns the position (`rows_in` when its row was put) of the oldest row it still needs, and
rows are let go only once both the usage writer committed them and no hold reaches back to them;
the holder calls `recheck()` after each of its commits. So a kill between the usage commit and the
ledger's leaves the row in the spool, and replay re-applies both (each is idempotent by request id).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy.engine import make_url

log = logging.getLogger("multihome.metering.spool")

SUFFIX = ".spool"
MAGIC = "multihome_usage_spool"
_ERROR_LOG_S = 10.0


def database_id(url: str) -> str:
    """Which database a spool file's rows belong to: a digest of the URL without its password (a SQLite
    file by its real path), so a shared directory never replays one database's rows into another."""
    u = make_url(url if "://" in url else f"sqlite:///{url}")
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        u = u.set(database=os.path.realpath(u.database or ""))
    text = u.set(drivername=u.get_backend_name(), password=None).render_as_string(hide_password=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def header(db: str) -> bytes:
    return msgspec.json.encode({MAGIC: 1, "db": db, "pid": os.getpid(), "at": time.time()}) + b"\n"


class _Segment:
    __slots__ = ("path", "fd", "size", "head", "pending", "retired", "syncing")

    def __init__(self, path: str, fd: int, head: int) -> None:
        self.path = path
        self.fd = fd
        self.size = self.head = head
        self.pending = 0  # rows in this file the database does not have yet
        self.retired = False  # rotated away and fully committed: delete once no fsync holds it
        self.syncing = False


class UsageSpool:
    def __init__(self, directory: str, db: str, *, segment_bytes: int = 8 << 20, fsync_interval_ms: float = 0) -> None:
        self.dir = directory
        self.db = db
        self.segment_bytes = segment_bytes
        self.fsync_s = fsync_interval_ms / 1000
        self.appended = 0
        self.errors = 0  # rows that could not be written to the spool (they are still queued in memory)
        self._name = f"usage-{os.getpid()}-{secrets.token_hex(4)}"
        self._n = 0
        self._cur: _Segment | None = None
        self._segments: list[_Segment] = []
        self._runs: deque[list[Any]] = deque()  # [segment or None, rows], oldest first
        self._torn = False  # a write stopped part-way: the next line starts on a fresh line
        self._error_logged = 0.0
        self._dirty = False
        self._syncer: asyncio.Task | None = None
        self._encoder = msgspec.json.Encoder()
        self._buf = bytearray()
        self.rows_in = 0  # rows put so far (spooled or not): the position of the last one
        self._done = 0  # rows the usage writer committed (in the order they were put)
        self._let_go_to = 0  # rows let go: committed and no longer held
        # The position of the oldest row another consumer still needs (None: none); see the docstring.
        self.hold: Callable[[], int | None] | None = None

    @property
    def files(self) -> list[str]:
        return [s.path for s in self._segments]

    def owns(self, path: str) -> bool:
        return os.path.basename(path).startswith(self._name + "-")

    def open(self) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._cur = self._new_segment()
        if self.fsync_s > 0:
            self._syncer = asyncio.get_running_loop().create_task(self._sync_loop(), name="usage-spool-fsync")

    def _new_segment(self) -> _Segment:
        self._n += 1
        name = f"{self._name}-{self._n:04d}{SUFFIX}"
        tmp = os.path.join(self.dir, "." + name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            head = header(self.db)
            os.write(fd, head)
            path = os.path.join(self.dir, name)
            os.rename(tmp, path)  # visible to other processes only once locked and headed
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        seg = _Segment(path, fd, len(head))
        self._segments.append(seg)
        return seg

    # -- the hot path: one write() per row, on the event loop ----------------------------------------
    def append(self, row: dict) -> None:
        """Write `row` to the current file (in the kernel when this returns, unless it failed: logged)."""
        seg = self._cur
        assert seg is not None, "open() first"
        buf = self._buf
        if self._torn:
            buf[:] = b"\n"
            self._encoder.encode_into(row, buf, 1)
        else:
            self._encoder.encode_into(row, buf)
        buf.extend(b"\n")
        try:
            if seg.size >= self.segment_bytes and seg.pending:
                seg = self._cur = self._new_segment()
            view = memoryview(buf)
            while view:
                n = os.write(seg.fd, view)
                seg.size += n
                view = view[n:]
                self._torn = bool(view)
        except OSError as exc:
            self._failed(exc)
            self._run(None)
            return
        self._torn = False
        self.appended += 1
        self._dirty = True
        self._run(seg)
        seg.pending += 1

    def unspooled(self, rows: int) -> None:
        """`rows` rows were queued without a spool line of this process (replayed from another's file)."""
        self._run(None, rows)

    def _run(self, seg: _Segment | None, rows: int = 1) -> None:
        self.rows_in += rows
        runs = self._runs
        if runs and runs[-1][0] is seg:
            runs[-1][1] += rows
        else:
            runs.append([seg, rows])

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._error_logged >= _ERROR_LOG_S:
            self._error_logged = now
            log.error(
                "usage spool %s: a row could not be written (%s); %d rows so far are only in memory until "
                "committed (a kill before then loses them)",
                self.dir,
                exc,
                self.errors,
            )

    # -- after each committed batch ------------------------------------------------------------------
    def committed(self, rows: int) -> None:
        """The oldest `rows` rows not yet committed are in the database: let their lines go (unless held)."""
        self._done += rows
        self.recheck()

    def recheck(self) -> None:
        """Let go of the committed rows no hold needs any more."""
        upto = self._done
        if self.hold is not None:
            held = self.hold()
            if held is not None:
                upto = min(upto, held - 1)
        rows = upto - self._let_go_to
        if rows <= 0:
            return
        self._let_go_to = upto
        runs = self._runs
        while rows and runs:
            run = runs[0]
            seg, k = run
            take = min(k, rows)
            rows -= take
            if take == k:
                runs.popleft()
            else:
                run[1] = k - take
            if seg is not None:
                seg.pending -= take
                if seg.pending == 0:
                    self._release(seg)

    def _release(self, seg: _Segment) -> None:
        try:
            if seg is self._cur:
                if seg.size > seg.head:
                    os.ftruncate(seg.fd, seg.head)  # O_APPEND: the next line goes after the header
                    seg.size = seg.head
                return
            seg.retired = True
            if not seg.syncing:
                self._drop(seg)
        except OSError as exc:
            log.warning("usage spool %s: could not let committed rows go (%s); a restart replays them", seg.path, exc)

    def _drop(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        try:
            os.unlink(seg.path)
        finally:
            os.close(seg.fd)

    # -- fsync, when asked for -----------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.fsync_s)
            if not self._dirty:
                continue
            self._dirty = False
            segs = list(self._segments)
            for seg in segs:
                seg.syncing = True
            try:
                await loop.run_in_executor(None, _datasync, [s.fd for s in segs])
            except OSError as exc:
                log.warning("usage spool %s: fdatasync failed (%s)", self.dir, exc)
            finally:
                for seg in segs:
                    seg.syncing = False
                    if seg.retired and seg in self._segments:
                        self._drop(seg)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def close(self) -> int:
        """Delete the files whose rows are all committed, keep (and unlock) the rest for the next start.
        -> rows kept."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(BaseException):
                await self._syncer
        kept = 0
        for seg in list(self._segments):
            if seg.pending == 0:
                self._drop(seg)
            else:
                kept += seg.pending
                with contextlib.suppress(OSError):
                    if self.fsync_s > 0:
                        os.fdatasync(seg.fd)
                os.close(seg.fd)
        self._segments = []
        self._cur = None
        if kept:
            log.warning("usage spool: %d unwritten rows kept in %s; the next start writes them", kept, self.dir)
        return kept


def _datasync(fds: list[int]) -> None:
    for fd in fds:
        os.fdatasync(fd)


__all__ = ["UsageSpool", "database_id", "SUFFIX", "MAGIC"]
