"""AuditLog: the per-process hash chain, written on the event loop, fsynced by one thread (group commit).

A producer's event body is encoded when it is submitted (rows.py for the per-call kinds). The event
loop turns the events submitted in one loop step into lines (chained and hashed) and writes them with
one `write` at the end of that step. One writer thread only fsyncs: it waits for "written up to
here", fsyncs, and resolves the futures of everything written before that fsync began with one call back
into the loop. While one fsync runs the next steps' lines gather, so under load one fsync covers many
events (group commit) and at low load an event waits for one fsync only. (Encoding and writing on the
writer thread cost a GIL hand-off and a wake-up per small batch, more than the work itself.)

Durability promise: a future from `append` resolves only after the event's line, and every line before
it, has been fsynced. One from `call_started` does too with `sync: answer`; with `sync: interval` (the
default) it resolves once the line is written (the OS holds it: a crash of this process loses nothing),
and the thread fsyncs at most `sync_interval_ms` later, or at once for an `append`. `record` is
fire-and-forget; its event follows within one group-commit round.

Each chain opens with a genesis record (seq 0) that links the earlier chains of the directory
(links.py) and, with a signing key, a checkpoint over it. With a database, every checkpoint is
also handed to the head registry (head_publisher.py) after it is durable in its file.

A failed write (on the loop) or fsync (on the thread) breaks the chain: the producers of every line
not yet fsynced fail, the loop stops writing and holds new events, the writer thread opens a new chain
that links the old one at its last fsynced line, and hands it to the loop, which closes the old file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from ..accounting.record import CallRecord
from ..config.audit import AuditConfig
from .chainfile import CHAIN_SUFFIX, CP_SUFFIX
from .checkpoint import encode_checkpoint, new_checkpoint
from .events import GENESIS_KIND, KINDS, ChainOpened, EventCore, canonical, genesis, seal
from .head_publisher import HeadPublisher
from .keys import key_id_of, load_signing_key
from .links import host_name, links_for_new_chain, trail_of
from .rows import AttemptRow, CallRow, StartedRow, TokensRow, ToolCallRow, call_body, denial_row_of

log = logging.getLogger("multihome.audit")

# A producer's event, admitted and waiting for the loop step's write: (kind, its canonical body, the
# future of its seq or None). Bodies are encoded when submitted: a bad payload fails its own producer.
_Item = tuple[bytes, bytes, "asyncio.Future[int] | None"]
_Waiters = list[tuple["asyncio.Future[int]", int]]  # the futures of one write's events, each with its seq


class _Written(NamedTuple):
    """Lines the loop wrote with one `write`, for the writer thread to fsync. `waiters` None: the write
    failed, the chain of generation `gen` is broken (the writer thread opens a new one)."""

    gen: int
    fd: int
    last: int  # seq of the last line
    head: bytes  # its hash
    events: int  # how many lines
    waiters: _Waiters | None


def _envelope(chain: str) -> bytes:
    """The canonical form of a chain's events up to the time (keys sorted: body, chain, kind, prev, seq,
    time), for `%` with (body, kind, prev, seq): the fields events.EventCore encodes, in its bytes."""
    return b'{"body":%b,"chain":' + canonical(chain).replace(b"%", b"%%") + b',"kind":"%b","prev":"%b","seq":%d,"time":'


_sha256 = hashlib.sha256
_HASH = b',"hash":"'
_BRACE = b"}"
_END = b'"}\n'


def new_chain_id() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"chn_{stamp}_{host}_{os.getpid()}_{secrets.token_hex(4)}"


_REOPEN_WAIT_S = 10.0  # how long `writable` waits for the writer thread's try at a new chain


class AuditClosed(RuntimeError):
    pass


class AuditUnwritable(OSError):
    """The trail could not take an event: a write or fsync failed, or no chain file could be opened (the
    directory's disk full or read-only). The event's producer is refused, never answered unaudited."""


def _unwritable(error: BaseException) -> BaseException:
    if isinstance(error, AuditUnwritable) or not isinstance(error, OSError):
        return error
    return AuditUnwritable(error.errno, f"the audit trail cannot be written ({error.strerror or error})")


class AuditLog:
    """The CallSink for audit, plus `append` for every other kind. Start/close like other services."""

    def __init__(self, config: AuditConfig, *, fsync=None, heads_url: str | None = None) -> None:
        """heads_url: the storage database, where the head registry lives (None: no registry)."""
        if config.dir is None:
            raise ValueError("audit.dir is not set")
        self.config = config
        self.dir = config.dir
        # The per-call bodies (rows.py) are encoded into this buffer and copied out: `encode` starts from a
        # small buffer and grows it (a copy each time) several times over a ~700-byte body. Loop thread only.
        self._encode_into = msgspec.json.Encoder().encode_into
        self._body = bytearray(4096)
        self._fsync = fsync or (os.fsync if config.fsync else (lambda fd: None))
        self._fsync_open = os.fsync if config.fsync else (lambda fd: None)  # the genesis record, before any event
        # sync "interval": a `call_started` resolves once written; the thread fsyncs within the interval.
        self._early = config.sync == "interval"
        self._interval_s = config.sync_interval_ms / 1000
        self._urgent = False  # loop -> thread: a write that someone awaits the fsync of (or a failure)
        self._signing = load_signing_key(config.signing_key_file, config.signing_key_env)
        self.key_id = None
        if self._signing is not None:
            self.key_id = config.key_id or key_id_of(self._signing.public_key())
        self.trail = trail_of(config)
        self.heads = HeadPublisher(heads_url, self.trail, host_name()) if heads_url else None
        self._checkpoints = self._signing is not None or self.heads is not None
        self.chain = ""
        # Loop-thread state: the chain as written (not yet necessarily fsynced).
        self._step: list[_Item] = []  # admitted, to be written at the end of this loop step
        self._flush_due = False
        self._waiting: collections.deque[_Item] = collections.deque()  # producers beyond max_queue, in order
        self._inflight = 0  # admitted and not yet durable
        self._gen = 0  # the chain's generation: +1 at each new chain
        self._wfd = -1
        self._wseq = 0
        self._whead = b""
        self._envelope = b""  # _envelope(chain) of the chain being written
        self._max_queue = config.max_queue
        self._broken = False  # a write failed: hold events until the writer thread hands over a new chain
        self._open_error = OSError(0, "")  # why the writer thread last failed to open a chain
        self._switched: asyncio.Event | None = None
        # Loop -> writer thread.
        self._written: collections.deque[_Written] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = True
        # Writer-thread state: the chain as fsynced. The chain's file descriptor is the loop's to close.
        self._tgen = 0
        self._tchain = ""
        self._fd = -1
        self._cp_fd = -1
        self._seq = 0
        self._head = ""
        self._cp_seq = 0
        self._cp_time = 0.0
        self.written = 0
        self.batches = 0
        self._peak = 0  # max_inflight up to the last _done
        self.errors = 0
        self.lost_after_close = 0
        self.on_flush: Callable[[float], None] | None = None  # seconds per fsync round, from the writer thread

    # -- lifecycle -----------------------------------------------------------------------------
    def verify(self):
        """Verify this trail's directory now (audit/verify.py) with this writer's own key and the configured
        public keys: what `multihome audit verify` reports, for the console. Blocking: run it in a thread.
        A chain being written may end in a line not yet complete (a warning, not a failure)."""
        from .keys import load_public_key
        from .verify import verify_dir

        keys = {kid: load_public_key(path) for kid, path in self.config.public_keys.items()}
        if self._signing is not None and self.key_id is not None:
            keys[self.key_id] = self._signing.public_key()
        return verify_dir(self.dir, keys)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._switched = asyncio.Event()
        if self.heads is not None:
            await self.heads.start()
        try:
            await asyncio.to_thread(self._open_chain)
        except BaseException:
            if self.heads is not None:
                await self.heads.close()
            raise
        self._wfd, self._wseq, self._whead, self.chain = self._fd, self._seq, self._head.encode(), self._tchain
        self._envelope = _envelope(self.chain)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._waiting:  # shutting down: admit everyone still in line
            self._admit(self._waiting.popleft())
        while self._step:  # write them all (each step fails or writes what it takes)
            if self._broken:
                assert self._switched is not None  # set by start()
                self._switched.clear()
                await self._switched.wait()
            else:
                self._flush_step()
        self._stopping = True
        self._wake.set()
        assert self._thread is not None  # set by start(), which opened the log
        await asyncio.to_thread(self._thread.join)
        # The thread has exited, so what it handed to the loop (futures, a new chain) is queued: let it run.
        await asyncio.sleep(0)
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1
        if self.heads is not None:  # after the final checkpoint, within a deadline
            await self.heads.close()

    # -- producers (event loop thread) ---------------------------------------------------------
    def append(self, kind: str, body) -> asyncio.Future[int]:
        """Queue an event; the future resolves with its seq once it is on disk (fsynced)."""
        if kind not in KINDS:
            raise ValueError(f"unknown audit event kind {kind!r} (known: {', '.join(KINDS)})")
        if self._loop is None:
            raise AuditClosed("the audit log is not started")
        future = self._loop.create_future()
        try:
            if kind == "call":
                kind_b, data = call_body(body)
            else:
                kind_b, data = kind.encode(), canonical(body)
        except Exception as exc:  # a bad payload fails its own producer
            log.exception("audit: cannot encode a %s event", kind)
            future.set_exception(exc)
            return future
        self._submit((kind_b, data, future))
        return future

    def record(self, call: CallRecord) -> None:
        """CallSink: fire-and-forget. A denied call becomes a `policy_denial` event."""
        if self._closed:
            self._lost(call.request_id)
            return
        try:
            kind, data = call_body(call)
        except Exception:  # the event is lost, loudly
            log.exception("audit: cannot encode the call event of %s", call.request_id)
            return
        self._submit((kind, data, None))

    def _lost(self, request_id: str) -> None:
        # A call finishing after shutdown began: say so loudly rather than break the caller.
        self.lost_after_close += 1
        log.error("audit: the log is closed; call %s was not recorded", request_id)

    def record_call(
        self,
        t,
        finished_at: float,
        dep,
        stream: bool,
        attempts,
        status: int,
        outcome: str,
        error_code: str | None,
        u,
        latency_ms: float,
        first_byte_ms: float | None,
        tool_calls,
        response_sha256: str | None,
    ) -> None:
        """accounting.CallFacts: `record` of the call's facts, without a CallRecord (the same event: the
        row `call_row` makes of the record tracker `t` would make, tests/accounting/test_record_call.py).
        Never raises into the front door. One frame, the row built here: this runs for every call, and
        natively each function and object per call costs more than its opcodes (cold caches)."""
        if self._closed:
            self._lost(t.request_id)
            return
        row: msgspec.Struct
        try:
            if outcome == "denied":
                kind, row = b"policy_denial", denial_row_of(t, finished_at, status, error_code)
            else:
                kind = b"call"
                who = t.principal
                if dep is not None:
                    name = dep.name  # one by one: no tuple to unpack
                    provider = dep.provider
                    pkind = dep.adapter.kind
                    region = dep.region
                    zone = dep.data_zone
                else:
                    name = provider = pkind = region = zone = None
                # routing's attempts, their ms rounded as the record's (accounting/tracker.py _attempts)
                if len(attempts) == 1:
                    a = attempts[0]
                    rows: Sequence[AttemptRow] = (
                        AttemptRow(a.deployment, (a.ms * 1000 + 0.5) // 1 / 1000, a.outcome, a.reason),
                    )
                else:
                    rows = [
                        AttemptRow(a.deployment, (a.ms * 1000 + 0.5) // 1 / 1000, a.outcome, a.reason) for a in attempts
                    ]
                row = CallRow(
                    rows,
                    zone,
                    name,
                    t.endpoint,
                    t.entitlement_id,
                    error_code,
                    finished_at,
                    first_byte_ms,
                    who.key_id,
                    latency_ms,
                    t.model_group,
                    outcome,
                    t.policy_code,
                    who.source,
                    provider,
                    pkind,
                    region,
                    t.request_id,
                    t.request_sha256,
                    response_sha256,
                    t.started_at,
                    status,
                    stream,
                    who.subject,
                    who.team,
                    who.tenant,
                    None
                    if u is None
                    else TokensRow(u.cached_tokens, u.completion_tokens, u.estimated, u.prompt_tokens),
                    [ToolCallRow(i, n) for n, i in tool_calls] if tool_calls else (),
                )
            self._encode_into(row, self._body)  # into a buffer that holds it: never grown on the way (as encode's)
            data = bytes(self._body)
        except Exception:  # the event is lost, loudly
            log.exception("audit: cannot encode the call event of %s", t.request_id)
            return
        if self._inflight >= self._max_queue:  # (producers wait in line only then: see _done)
            self._waiting.append((kind, data, None))
            return
        # _admit, inlined: this and call_started run for every call.
        self._inflight += 1
        self._step.append((kind, data, None))
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush_step)  # type: ignore[union-attr]  # set while not _closed

    def call_started(
        self, request_id: str, principal, model_group: str, endpoint: str, request_sha256: str
    ) -> asyncio.Future[int]:
        """Queue the call's `call_started` event; the future resolves once it is on disk. A plain
        function, not a coroutine: the front door holds the future, no task per call is needed."""
        if self._closed:  # also before start()
            raise AuditClosed("the audit log is " + ("closed" if self._loop else "not started"))
        loop = self._loop
        future = loop.create_future()  # type: ignore[union-attr]  # set while not _closed
        p = principal
        try:
            self._encode_into(
                StartedRow(
                    endpoint, p.key_id, model_group, p.source, request_id, request_sha256, p.subject, p.team, p.tenant
                ),
                self._body,
            )
            data = bytes(self._body)
        except Exception as exc:  # a bad payload fails its own producer
            log.exception("audit: cannot encode the call_started event of %s", request_id)
            future.set_exception(exc)
            return future
        if self._inflight >= self._max_queue:  # (producers wait in line only then: see _done)
            # Full: wait in line. The future resolves later, which holds the answer back.
            self._waiting.append((b"call_started", data, future))
            return future
        # _admit, inlined: this and record_call run for every call.
        self._inflight += 1
        self._step.append((b"call_started", data, future))
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush_step)  # type: ignore[union-attr]
        return future

    def _submit(self, item: _Item) -> None:
        if self._closed:
            raise AuditClosed("the audit log is closed")
        if self._inflight >= self._max_queue or self._waiting:
            # Full: wait in line (FIFO). The producer's future resolves later, which is how an
            # awaiting producer (call_started) is held back; nothing is dropped.
            self._waiting.append(item)
            return
        self._admit(item)

    def _admit(self, item: _Item) -> None:
        self._inflight += 1
        self._step.append(item)
        if not self._flush_due:
            # One write per loop step for every event submitted in it (call_soon runs after the
            # callbacks already ready, so the events of this step's other tasks join the write).
            self._flush_due = True
            assert self._loop is not None  # _submit refuses before start()
            self._loop.call_soon(self._flush_step)

    def _flush_step(self) -> None:
        """Chain, hash and write the events admitted in this loop step: one `write`; the writer thread fsyncs."""
        self._flush_due = False
        if self._broken or not self._step:
            return  # a new chain is on its way: _switch_chain flushes
        if self._wfd < 0:  # the last chain could not be opened: these wait for the writer thread's next try
            self._reopen()
            return
        items = self._step
        if len(items) > self.config.max_batch:
            items, self._step = items[: self.config.max_batch], items[self.config.max_batch :]
            self._flush_due = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_step)
        else:
            self._step = []
        # Every event of the write has the same time: the envelope up to its closing brace is one template.
        # The brace itself is hashed apart and written in _END: no copy of each line without it.
        envelope = self._envelope + canonical(time.time())
        sha256, hash_, end, brace = _sha256, _HASH, _END, _BRACE  # locals: read once per event
        out: list[bytes] = []
        waiters: _Waiters = []  # resolved once fsynced
        early: _Waiters = []  # sync "interval": the `call_started` events, resolved once written
        early_kind = b"call_started" if self._early else None
        seq, head = self._wseq, self._whead
        for kind, body, future in items:
            seq += 1
            core = envelope % (body, kind, head, seq)  # the canonical form, less its closing brace
            digest = sha256(core)
            digest.update(brace)  # the hash covers the whole canonical form
            head = digest.hexdigest().encode()
            out += (core, hash_, head, end)  # the stored line: the hash spliced in before the brace
            if future is not None:
                (early if kind == early_kind else waiters).append((future, seq))
        try:
            self._write_all(self._wfd, b"".join(out))
        except OSError as exc:
            # The file's tail is now unknown (maybe half a line): fail these producers, write nothing more
            # to this chain, and have the writer thread fsync what came before and open a new chain.
            self.errors += 1
            log.error("audit: writing chain %s failed (%s); starting a new chain", self.chain, exc)
            self._broken = True
            self._done(len(items), waiters + early, exc)
            self._hand_over(_Written(self._gen, self._wfd, self._wseq, self._whead, 0, None))
            return
        self._wseq, self._whead = seq, head
        for future, n in early:
            try:
                future.set_result(n)
            except asyncio.InvalidStateError:  # cancelled: its producer has gone (rare: no done() per event)
                pass
        self._hand_over(_Written(self._gen, self._wfd, seq, head, len(items), waiters))

    def _reopen(self) -> None:
        """Loop thread, with no chain file open: ask the writer thread to open one (once at a time; events
        meanwhile are held for it, and refused if it fails again: _switch_chain)."""
        if not self._broken:
            self._broken = True
            self._hand_over(_Written(self._gen, -1, self._wseq, self._whead, 0, None))

    def _unopened(self) -> AuditUnwritable:
        error = self._open_error
        return AuditUnwritable(error.errno, f"no audit chain could be opened ({error.strerror or error})")

    async def writable(self) -> None:
        """Raise AuditUnwritable while no chain file can be opened, so a change is refused before it is made
        rather than made and then left out of the trail. With none open, the writer thread tries once more
        first (the disk may have room again): this waits for that try, a chain file's creation."""
        if self._wfd >= 0 or self._closed:
            return
        assert self._switched is not None  # set by start()
        if not self._broken:
            self._switched.clear()
            self._reopen()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._switched.wait(), _REOPEN_WAIT_S)
        if self._wfd < 0:
            raise self._unopened()

    def _hand_over(self, written: _Written) -> None:
        queue = self._written
        queue.append(written)
        if self._early and (written.waiters or written.waiters is None):
            self._urgent = True  # the thread's interval is cut short: someone waits for this fsync
            self._wake.set()
        elif len(queue) == 1:
            # Only the first entry after the writer emptied the queue wakes it: with more queued, it has
            # not yet seen the queue empty and takes this one too (a set is a lock and a notify).
            self._wake.set()

    def _done(self, count: int, waiters: _Waiters, error: BaseException | None) -> None:
        """Loop thread: `count` events are durable (their waiters get their seqs) or failed with `error`."""
        if self._inflight > self._peak:  # the most in flight is reached just before some are done (or now)
            self._peak = self._inflight
        self._inflight -= count
        if error is not None:
            error = _unwritable(error)
        for future, seq in waiters:
            if future.done():  # cancelled: its producer has gone
                continue
            if error is None:
                future.set_result(seq)
            else:
                future.set_exception(error)
        # After this, producers wait in line only while the queue is full (inflight only falls here): so a
        # producer that finds the queue not full may skip the line (call_started, record_call).
        while self._waiting and self._inflight < self._max_queue:
            self._admit(self._waiting.popleft())

    def _round_done(self, results: list[tuple[int, _Waiters, BaseException | None]]) -> None:
        for count, waiters, error in results:
            self._done(count, waiters, error)

    def _chain_broken(self, gen: int) -> None:
        """Loop thread: an fsync of chain generation `gen` failed; hold events until the new chain."""
        if gen == self._gen:
            self._broken = True

    def _switch_chain(self, gen: int, fd: int, chain: str, head: str) -> None:
        """Loop thread: the writer thread opened chain `chain` (generation `gen`) after a failure."""
        if self._wfd >= 0:
            try:
                os.close(self._wfd)  # the old chain: no line is written to it any more
            except OSError:
                pass
        self._gen, self._wfd, self._wseq, self._whead, self.chain = gen, fd, 0, head.encode(), chain
        self._envelope = _envelope(chain)
        self._broken = False
        assert self._switched is not None
        self._switched.set()
        if fd < 0 and self._step:  # still no chain (the disk still full): refuse what waited for one
            items, self._step = self._step, []
            self._done(len(items), [(f, 0) for _, _, f in items if f is not None], self._unopened())
        if self._step and not self._flush_due:
            self._flush_due = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_step)

    @property
    def queued(self) -> int:
        """Events admitted and not yet durable (never above max_queue)."""
        return self._inflight

    @property
    def max_inflight(self) -> int:
        """The most events admitted and not yet durable at once (kept here, not per admitted event)."""
        return max(self._peak, self._inflight)

    @property
    def waiting(self) -> int:
        """Producers in line because the queue is full."""
        return len(self._waiting)

    # -- writer thread -------------------------------------------------------------------------
    def _open_chain(self, known: dict[str, tuple[int, str]] | None = None) -> None:
        """A new chain: its genesis record, and with a key the checkpoint over it, durable before any
        event. `known`: chains whose durable end this process knows better than their files."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        links = links_for_new_chain(self.dir, known)
        chain = new_chain_id()
        now = time.time()
        record = ChainOpened(trail=self.trail, host=host_name(), pid=os.getpid(), key_id=self.key_id, links=links)
        line, head = seal(EventCore(chain=chain, seq=0, time=now, prev=genesis(chain), kind=GENESIS_KIND, body=record))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        fd = cp_fd = -1
        made: list[str] = []
        try:
            fd = os.open(os.path.join(self.dir, chain + CHAIN_SUFFIX), flags, 0o600)
            made.append(os.path.join(self.dir, chain + CHAIN_SUFFIX))
            self._write_all(fd, line)
            self._fsync_open(fd)
            if self._signing is not None:
                cp_fd = os.open(os.path.join(self.dir, chain + CP_SUFFIX), flags, 0o600)
                made.append(os.path.join(self.dir, chain + CP_SUFFIX))
            dfd = os.open(self.dir, os.O_RDONLY)  # make the new names themselves durable
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            for opened in (fd, cp_fd):
                if opened >= 0:
                    os.close(opened)
            for path in made:  # a chain that never held its genesis record (a full disk) is not left behind
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        self._close_checkpoints()
        self._tchain, self._fd, self._cp_fd = chain, fd, cp_fd
        self._seq, self._head = 0, head
        self._cp_seq, self._cp_time = -1, time.monotonic()
        self._maybe_checkpoint(force=False)  # seq 0: the genesis record is signed (and registered) at once
        log.info("audit chain %s in %s (links %d earlier chain(s))", chain, self.dir, len(links))

    def _close_checkpoints(self) -> None:
        if self._cp_fd >= 0:
            try:
                os.close(self._cp_fd)
            except OSError:
                pass
        self._cp_fd = -1

    def _run(self) -> None:
        cfg = self.config
        wait_s = min(cfg.checkpoint_every_s, 1.0) if self._checkpoints else 1.0
        queue = self._written
        while True:
            self._wake.wait(wait_s)
            self._wake.clear()
            while queue:
                if self._early:
                    self._gather()
                elif cfg.commit_delay_ms > 0:
                    time.sleep(cfg.commit_delay_ms / 1000)  # let more lines gather under this fsync
                taken: list[_Written] = []
                while queue:
                    taken.append(queue.popleft())
                started = time.perf_counter()
                self._sync(taken)
                if self.on_flush is not None:
                    self.on_flush(time.perf_counter() - started)
                self._maybe_checkpoint(force=False)
            if self._stopping and not queue:
                break
            self._maybe_checkpoint(force=False)
        self._maybe_checkpoint(force=True)
        self._close_checkpoints()

    def _gather(self) -> None:
        """sync "interval": wait up to the interval for more lines, unless a producer awaits this fsync
        (an `append`, a failed write) or the log is closing."""
        deadline = time.monotonic() + self._interval_s
        while not (self._urgent or self._stopping):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wake.wait(left)
            self._wake.clear()
        self._urgent = False

    def _sync(self, taken: list[_Written]) -> None:
        """One fsync for every line written before it began; resolve their producers with one call into the loop."""
        results: list[tuple[int, _Waiters, BaseException | None]] = []
        synced: list[_Written] = []
        broken: BaseException | None = None
        for w in taken:
            if w.gen != self._tgen:
                # Written to a chain that broke before this line was fsynced: its file's tail is unknown.
                results.append((w.events, w.waiters or [], OSError(5, f"audit chain {self._tchain} failed")))
            elif w.waiters is None:
                broken = OSError(5, "the write failed")  # the loop failed these producers itself
            else:
                synced.append(w)
        if synced:
            try:
                self._fsync(synced[-1].fd)
            except OSError as exc:
                self.errors += 1
                log.error("audit: fsync of chain %s failed (%s); starting a new chain", self._tchain, exc)
                # First stop the loop writing to this chain, so that a producer told of this failure has
                # its next event held for the new chain; lines it writes until then fail too.
                self._resolve(self._chain_broken, self._tgen)
                results.extend((w.events, w.waiters, exc) for w in synced if w.waiters is not None)
                broken = exc
            else:
                for w in synced:
                    assert w.waiters is not None
                    results.append((w.events, w.waiters, None))
                last = synced[-1]
                self.written += last.last - self._seq
                self.batches += 1
                self._seq, self._head = last.last, last.head.decode()
        if results:
            self._resolve(self._round_done, results)
        if broken is not None:
            self._new_chain()

    def _new_chain(self) -> None:
        """After a failure: a new chain linking the old one at its last fsynced line, handed to the loop.
        Lines the loop writes to the old chain meanwhile carry the old generation and fail."""
        self._tgen += 1
        durable = {self._tchain: (self._seq, self._head)}  # the file's tail holds lines that were never fsynced
        try:
            self._open_chain(durable)
        except OSError as exc:
            # No chain: the loop refuses the next events and brings the writer back here (_no_chain).
            log.error("audit: cannot open a new chain (%s)", exc)
            self._open_error = exc
            self._fd = -1
        self._resolve(self._switch_chain, self._tgen, self._fd, self._tchain, self._head)

    def _resolve(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None  # the writer thread runs only after start()
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is gone (process exiting): nobody is waiting any more

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _maybe_checkpoint(self, force: bool) -> None:
        if not self._checkpoints or self._fd < 0 or (self._seq == self._cp_seq and not force):
            return
        cfg = self.config
        due = (
            self._cp_seq < 0  # the genesis record
            or self._seq - self._cp_seq >= cfg.checkpoint_every_events
            or time.monotonic() - self._cp_time >= cfg.checkpoint_every_s
        )
        if not (force or due):
            return
        cp = new_checkpoint(self._signing, self.key_id, self._tchain, self._seq, self._head, time.time(), final=force)
        if self._cp_fd >= 0:
            try:
                os.write(self._cp_fd, encode_checkpoint(cp))
                self._fsync(self._cp_fd)
            except OSError as exc:
                log.error("audit: cannot write a checkpoint for %s (%s)", self._tchain, exc)
                return
        self._cp_seq, self._cp_time = self._seq, time.monotonic()
        if self.heads is not None:  # only once durable in its file: the registry never runs ahead of it
            self.heads.offer(cp)
