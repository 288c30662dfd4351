"""The usage spool: each usage row on local disk before its call is answered, until the database has it.

The writer (writer.py) keeps rows in memory and commits them in groups, so a process killed between
an answer and the commit (SIGKILL, the OOM killer) would lose that call's row. `append` therefore
copies the row, as one JSON line (its tuple as an array: row.py), into a shared memory mapping (MAP_SHARED) of a file this process
owns: the mapping's pages are the kernel's page cache, which outlives the process, so every row
whose copy returned is read back by the next start (replay.py), which inserts it idempotently
(`request_id` is the key). No system call per row: a write() gave the interpreter away on the event
loop's thread at every call, and with the writer threads runnable the loop waited for it back. A
machine crash is another matter: with `fsync_interval_ms` the files are fdatasynced that often, off
the event loop (on Linux that writes back the pages dirtied through the mapping too).

Files: `usage-<pid>-<random>-<n>.spool` in the spool directory, each preallocated to
`segment_bytes` (posix_fallocate: a full disk is an error when a file is made, never a SIGBUS on a
later copy), opening with a header line that names the database its rows belong to, then the rows,
then NUL bytes (a reader stops at the first NUL). Each is held with an exclusive flock while its
process lives (created under a dot-name and renamed once locked, headed and allocated, so no other
process sees it unlocked). Rows are committed in the order they were put, so `committed(n)` lets the
oldest n go: a file whose rows are all in the database is zeroed back to its header (the current
one) or deleted (an older one, after rotation). The next file is made when the current one is three
quarters full: it is started in a thread at the half (making one took 0.6-2 ms, a stall on the event
loop) while rows go on into the current one, and its outcome is taken at three quarters (waited for
there if not done yet). So a file that cannot be made (a full disk) is known while a quarter of the current
one is left for the calls already admitted: meanwhile `refusing()` is true and the limiter refuses
new calls (503 `usage_spool_unavailable`), retrying once a second. A clean close deletes what is
committed and keeps the rest (cut to its rows) for the next start (the database was unreachable).

A second consumer of the same calls with its own queue (the contract ledger) can hold rows too:
`hold` returns the position (`rows_in` when its row was put) of the oldest row it still needs, and
rows are let go only once both the usage writer committed them and no hold reaches back to them;
the holder calls `recheck()` after each of its commits. So a kill between the usage commit and the
ledger's leaves the row in the spool, and replay re-applies both (each is idempotent by request id).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy.engine import make_url

from .row import Row

log = logging.getLogger("multihome.metering.spool")

SUFFIX = ".spool"
MAGIC = "multihome_usage_spool"
# The header's MAGIC value: 2, rows as JSON arrays in column order (row.py); 1, rows as JSON objects (files
# of earlier versions, still replayed). A version that knows only 1 leaves a file of 2 alone, not dropped.
VERSION = 2
_ERROR_LOG_S = 10.0
_RETRY_S = 1.0  # a next file that could not be made is tried again after this long
_PAGE = mmap.PAGESIZE


def database_id(url: str) -> str:
    """Which database a spool file's rows belong to: a digest of the URL without its password (a SQLite
    file by its real path), so a shared directory never replays one database's rows into another."""
    u = make_url(url if "://" in url else f"sqlite:///{url}")
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        u = u.set(database=os.path.realpath(u.database or ""))
    text = u.set(drivername=u.get_backend_name(), password=None).render_as_string(hide_password=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def header(db: str) -> bytes:
    return msgspec.json.encode({MAGIC: VERSION, "db": db, "pid": os.getpid(), "at": time.time()}) + b"\n"


class _Segment:
    __slots__ = ("path", "fd", "map", "size", "pos", "head", "reserve", "mark", "pending", "retired", "syncing")

    def __init__(self, path: str, fd: int, mapping: mmap.mmap, size: int, head: int) -> None:
        self.path = path
        self.fd = fd
        self.map = mapping
        self.size = size  # the file's (and the mapping's) length, allocated up front
        self.pos = self.head = head  # where the next row goes; where the rows start
        self.reserve = size - size // 4  # by this, the next file is made (or known not to be makeable)
        self.mark = size // 2  # past this, a row goes through UsageSpool._advance (the next file is started)
        self.pending = 0  # rows in this file the database does not have yet
        self.retired = False  # rotated away and fully committed: delete once no fsync holds it
        self.syncing = False

    def close(self) -> None:
        try:
            self.map.close()
        finally:
            os.close(self.fd)


class UsageSpool:
    def __init__(self, directory: str, db: str, *, segment_bytes: int = 8 << 20, fsync_interval_ms: float = 0) -> None:
        self.dir = directory
        self.db = db
        self.segment_bytes = segment_bytes
        self.fsync_s = fsync_interval_ms / 1000
        self.errors = 0  # rows that could not be written to the spool (they are still queued in memory)
        # Why the next file could not be made (a full disk); None: fine. See `refusing`.
        self.down: OSError | None = None
        self._retry_at = 0.0
        self._name = f"usage-{os.getpid()}-{secrets.token_hex(4)}"
        self._n = 0
        self._cur: _Segment | None = None
        self._next: _Segment | None = None  # made ahead, holds no row yet
        # The next file being made off the event loop (see _advance); its thread (from `open`).
        self._making: concurrent.futures.Future[_Segment] | None = None
        self._maker: concurrent.futures.ThreadPoolExecutor | None = None
        self._segments: list[_Segment] = []  # the files that hold rows, and the current one
        self._runs: deque[list[Any]] = deque()  # [segment or None, rows], oldest first
        self._error_logged = 0.0
        self._dirty = False
        self._syncer: asyncio.Task | None = None
        self._encoder = msgspec.json.Encoder()
        self._buf = bytearray()
        self.rows_in = 0  # rows put so far (spooled or not): the position of the last one
        self._unspooled = 0  # rows of them queued without a line here (replayed from another's file)
        self._tail: list[Any] | None = None  # self._runs[-1] while there is one
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
        """Make the first file (an OSError, such as a full disk, is the caller's: see Metering)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._cur = self._new_segment(0)
        self._segments.append(self._cur)
        # The thread that makes the next files, started now: starting it at the first rotation kept the
        # loop ~0.8 ms.
        self._maker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="usage-spool")
        self._maker.submit(int)
        if self.fsync_s > 0:
            self._syncer = asyncio.get_running_loop().create_task(self._sync_loop(), name="usage-spool-fsync")

    def _new_segment(self, row: int) -> _Segment:
        """A locked, headed, allocated and mapped file with room for at least a row of `row` bytes."""
        return self._make(self._new_name(), row)

    def _new_name(self) -> str:
        self._n += 1  # on the event loop only: names never repeat, whichever thread makes the file
        return f"{self._name}-{self._n:04d}{SUFFIX}"

    def _make(self, name: str, row: int) -> _Segment:
        """_new_segment's work, safe off the event loop: it touches nothing of `self` that changes."""
        tmp = os.path.join(self.dir, "." + name)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        mapping = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            head = header(self.db)
            size = max(self.segment_bytes, -(-(len(head) + row) // _PAGE) * _PAGE)
            os.posix_fallocate(fd, 0, size)  # ENOSPC here, not a SIGBUS at a later copy
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            mapping[: len(head)] = head
            path = os.path.join(self.dir, name)
            os.rename(tmp, path)  # visible to other processes only once locked, headed and allocated
        except BaseException:
            if mapping is not None:
                mapping.close()
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return _Segment(path, fd, mapping, size, len(head))

    # -- the hot path: one copy per row, on the event loop -------------------------------------------
    def append(self, row: Row) -> int:
        """Copy `row` into the current file (in the page cache when this returns, unless there was no
        room: logged, the row stays in memory only). -> its position (`rows_in`)."""
        seg = self._cur
        assert seg is not None, "open() first"
        buf = self._buf
        self._encoder.encode_into(row, buf)
        buf += b"\n"
        pos = seg.pos
        end = pos + len(buf)
        if end > seg.mark:
            advanced = self._advance(len(buf))
            if advanced is None:
                self._run(None)
                return self.rows_in
            seg = advanced
            pos = seg.pos
            end = pos + len(buf)
        seg.map[pos:end] = buf
        seg.pos = end
        self._dirty = True
        seg.pending += 1
        tail = self._tail
        if tail is not None and tail[0] is seg:  # the usual row: one more in the newest run
            tail[1] += 1
            self.rows_in += 1
        else:
            self._run(seg)
        return self.rows_in

    @property
    def appended(self) -> int:
        """Rows copied into a file of this process."""
        return self.rows_in - self._unspooled - self.errors

    def _advance(self, n: int) -> _Segment | None:
        """The segment a row of `n` bytes goes to once the current one is past its half: the current
        while it has room, else the next one. None: no room. The next file is started in a thread at
        the half; at the reserve mark its outcome is taken, waited for if it is not there yet (rare: a
        quarter of a file's rows to make it), so a file that cannot be made is known there, as before."""
        cur = self._cur
        assert cur is not None
        making = self._making
        if making is not None and (making.done() or cur.pos + n > cur.reserve):
            self._made()
        if self._next is None and self._making is None and (self.down is None or time.monotonic() >= self._retry_at):
            self._start_making()
        if cur.pos + n <= cur.reserve:
            cur.mark = cur.reserve  # back here at the reserve mark
            return cur
        if cur.pos + n <= cur.size:
            return cur
        nxt = self._next
        if nxt is None or nxt.head + n > nxt.size:
            try:  # the one made ahead is not ready (or too small for this row): made here, as before
                made = self._new_segment(n)
            except OSError as exc:
                self._unavailable(exc)
                self._failed(exc)
                return None
            if nxt is not None:
                self._next, nxt = nxt, made  # keep the one made ahead for later
            else:
                nxt = made
        else:
            self._next = None
        self._segments.append(nxt)
        self._cur = nxt
        if cur.pending == 0:  # nothing of it is waiting (cannot happen while rows are pending: see _release)
            self._release(cur)
        return nxt

    def _start_making(self) -> None:
        """Make the next file in a thread of its own: creating, allocating and mapping it took 0.6-2 ms,
        which on the event loop was a stall in every call's latency at each rotation. Its outcome is
        taken by _made, on the loop, at the reserve mark (see _advance) or a `refusing()` check."""
        if self._maker is None:  # closed: no file is made any more
            return
        self._making = self._maker.submit(self._make, self._new_name(), 0)

    def _made(self) -> None:
        """Take the outcome of the file made off the loop (waiting for it if it is not done): the next
        file, or why it could not be made."""
        making, self._making = self._making, None
        assert making is not None
        try:
            seg = making.result()
        except OSError as exc:
            self._unavailable(exc)
            return
        if self._next is not None or self._cur is None:  # one was made on the loop meanwhile, or closed
            self._drop_unused(seg)
            return
        self._next = seg
        if self.down is not None:
            log.warning("usage spool %s: a new spool file could be made again; calls are accepted", self.dir)
            self.down = None

    def _drop_unused(self, seg: _Segment) -> None:
        try:
            with contextlib.suppress(OSError):
                os.unlink(seg.path)
        finally:
            seg.close()

    def _prepare(self, n: int) -> None:
        try:
            self._next = self._new_segment(n)
        except OSError as exc:
            self._unavailable(exc)
            return
        if self.down is not None:
            log.warning("usage spool %s: a new spool file could be made again; calls are accepted", self.dir)
            self.down = None

    def _unavailable(self, exc: OSError) -> None:
        first = self.down is None
        self.down = exc
        self._retry_at = time.monotonic() + _RETRY_S
        if first:
            log.error(
                "usage spool %s: cannot make the next spool file (%s); new calls are refused (503 "
                "usage_spool_unavailable) until it can, the calls already admitted use what is left of the current one",
                self.dir,
                exc,
            )

    def refusing(self) -> bool:
        """True while new calls must be refused: the next file could not be made and the current one is
        into the quarter kept for the calls already admitted. Tries to make the file once a second."""
        if self._making is not None and self._making.done():
            self._made()  # a full disk is known here as soon as the file made off the loop failed
        if self.down is None:
            return False
        cur = self._cur
        if cur is None or cur.pos <= cur.reserve:
            return False  # room again (its rows were committed): the next file is tried when needed
        if self._next is None and self._making is None and time.monotonic() >= self._retry_at:
            # On the loop, at most once a second and only while refusing: the call asking is accepted
            # at once if there is room again.
            self._prepare(0)
        return self.down is not None

    def unspooled(self, rows: int) -> None:
        """`rows` rows were queued without a spool line of this process (replayed from another's file)."""
        self._unspooled += rows
        self._run(None, rows)

    def _run(self, seg: _Segment | None, rows: int = 1) -> None:
        self.rows_in += rows
        tail = self._tail
        if tail is not None and tail[0] is seg:
            tail[1] += rows
        else:
            self._tail = tail = [seg, rows]
            self._runs.append(tail)

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
                if run is self._tail:
                    self._tail = None
            else:
                run[1] = k - take
            if seg is not None:
                seg.pending -= take
                if seg.pending == 0:
                    self._release(seg)

    def _release(self, seg: _Segment) -> None:
        try:
            if seg is self._cur:
                if seg.pos > seg.head:
                    # Zeroed from its first byte on, so a reader stops at the header at once, and no
                    # stale byte can follow a new row: the next rows go after the header again.
                    head = seg.head
                    seg.map[head : head + 1] = b"\0"
                    seg.map[head + 1 : seg.pos] = bytes(seg.pos - head - 1)
                    seg.pos = head
                    seg.mark = seg.size // 2
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
            seg.close()

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
    async def close(self, quiet: bool = False) -> int:
        """Delete the files whose rows are all committed, keep (cut to their rows, unlocked) the rest for
        the next start, and say so (unless `quiet`: the caller says it with why). -> rows kept."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(BaseException):
                await self._syncer
        if self._making is not None:
            with contextlib.suppress(OSError):
                await asyncio.wrap_future(self._making)
            self._made()
        if self._maker is not None:
            self._maker.shutdown(wait=False)
            self._maker = None
        kept = 0
        if self._next is not None:
            self._segments.append(self._next)  # holds no row: deleted below
            self._next = None
        for seg in list(self._segments):
            if seg.pending == 0:
                self._drop(seg)
                continue
            kept += seg.pending
            try:
                seg.map.close()
                with contextlib.suppress(OSError):
                    os.ftruncate(seg.fd, seg.pos)  # the allocated rest is not needed any more
                    if self.fsync_s > 0:
                        os.fdatasync(seg.fd)
            finally:
                os.close(seg.fd)
        self._segments = []
        self._cur = None
        if kept and not quiet:
            log.warning("usage spool: %d unwritten rows kept in %s; the next start writes them", kept, self.dir)
        return kept


def _datasync(fds: list[int]) -> None:
    for fd in fds:
        os.fdatasync(fd)


__all__ = ["UsageSpool", "database_id", "SUFFIX", "MAGIC", "VERSION"]
