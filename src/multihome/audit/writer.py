"""AuditLog: the per-process hash chain and its batched writer with group commit.

The event loop only enqueues (a deque append and a wake-up); one writer thread turns payloads into
events, chains and hashes them, writes a batch, fsyncs, and then resolves the futures of the whole
batch on the loop. While one batch is being fsynced the next one gathers, so under load one fsync
covers many events (group commit) and at low load an event waits for one fsync only.

Durability promise: a future from `append` (and `call_started`) resolves only after the event's
line, and every line before it, has been fsynced. `record` is fire-and-forget; its event follows
within one group-commit interval.

Each chain opens with a genesis record (seq 0) that links the earlier chains of the directory
(links.py) and, with a signing key, a checkpoint over it. With a database, every checkpoint is
also handed to the head registry (head_publisher.py) after it is durable in its file.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..accounting.record import CallRecord
from ..config.audit import AuditConfig
from .chainfile import CHAIN_SUFFIX, CP_SUFFIX
from .checkpoint import encode_checkpoint, new_checkpoint
from .events import GENESIS_KIND, KINDS, CallStarted, ChainOpened, EventCore, body_for, genesis, seal
from .head_publisher import HeadPublisher
from .keys import key_id_of, load_signing_key
from .links import host_name, links_for_new_chain, trail_of

log = logging.getLogger("multihome.audit")

# A producer's event on its way to the writer thread: (kind, payload, the future of its seq or None).
_Item = tuple[str, Any, "asyncio.Future[int] | None"]


def new_chain_id() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"chn_{stamp}_{host}_{os.getpid()}_{secrets.token_hex(4)}"


class AuditClosed(RuntimeError):
    pass


class AuditLog:
    """The CallSink for audit, plus `append` for every other kind. Start/close like other services."""

    def __init__(self, config: AuditConfig, *, fsync=None, heads_url: str | None = None) -> None:
        """heads_url: the storage database, where the head registry lives (None: no registry)."""
        if config.dir is None:
            raise ValueError("audit.dir is not set")
        self.config = config
        self.dir = config.dir
        self._fsync = fsync or (os.fsync if config.fsync else (lambda fd: None))
        self._fsync_open = os.fsync if config.fsync else (lambda fd: None)  # the genesis record, before any event
        self._signing = load_signing_key(config.signing_key_file, config.signing_key_env)
        self.key_id = None
        if self._signing is not None:
            self.key_id = config.key_id or key_id_of(self._signing.public_key())
        self.trail = trail_of(config)
        self.heads = HeadPublisher(heads_url, self.trail, host_name()) if heads_url else None
        self._checkpoints = self._signing is not None or self.heads is not None
        self.chain = ""
        self._pending: collections.deque[_Item] = collections.deque()  # admitted, not yet taken by the writer
        self._waiting: collections.deque[_Item] = collections.deque()  # producers beyond max_queue, in order
        self._inflight = 0  # admitted and not yet durable (loop thread only)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = True
        # Writer-thread state.
        self._fd = -1
        self._cp_fd = -1
        self._seq = 0
        self._head = ""
        self._cp_seq = 0
        self._cp_time = 0.0
        self.written = 0
        self.batches = 0
        self.max_inflight = 0
        self.errors = 0
        self.lost_after_close = 0
        self.on_flush: Callable[[float], None] | None = None  # seconds per durable batch, from the writer thread

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
        if self.heads is not None:
            await self.heads.start()
        try:
            await asyncio.to_thread(self._open_chain)
        except BaseException:
            if self.heads is not None:
                await self.heads.close()
            raise
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._waiting:  # shutting down: admit everyone still in line
            self._admit(self._waiting.popleft())
        self._stopping = True
        self._wake.set()
        assert self._thread is not None  # set by start(), which opened the log
        await asyncio.to_thread(self._thread.join)
        # The thread has exited, so futures it resolved are queued on the loop: let them run.
        await asyncio.sleep(0)
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
        self._submit((kind, body, future))
        return future

    def record(self, call: CallRecord) -> None:
        """CallSink: fire-and-forget. A denied call becomes a `policy_denial` event."""
        if self._closed:
            # A call finishing after shutdown began: say so loudly rather than break the caller.
            self.lost_after_close += 1
            log.error("audit: the log is closed; call %s was not recorded", call.request_id)
            return
        self._submit(("call", call, None))

    def call_started(
        self, request_id: str, principal, model_group: str, endpoint: str, request_sha256: str
    ) -> asyncio.Future[int]:
        """Queue the call's `call_started` event; the future resolves once it is on disk. A plain
        function, not a coroutine: the front door holds the future, no task per call is needed."""
        body = CallStarted(
            request_id=request_id,
            tenant=principal.tenant,
            team=principal.team,
            key_id=principal.key_id,
            subject=principal.subject,
            principal_source=principal.source,
            endpoint=endpoint,
            model_group=model_group,
            request_sha256=request_sha256,
        )
        return self.append("call_started", body)

    def _submit(self, item: _Item) -> None:
        if self._closed:
            raise AuditClosed("the audit log is closed")
        if self._inflight >= self.config.max_queue or self._waiting:
            # Full: wait in line (FIFO). The producer's future resolves later, which is how an
            # awaiting producer (call_started) is held back; nothing is dropped.
            self._waiting.append(item)
            return
        self._admit(item)

    def _admit(self, item: _Item) -> None:
        self._inflight += 1
        if self._inflight > self.max_inflight:
            self.max_inflight = self._inflight
        pending = self._pending
        pending.append(item)
        if len(pending) == 1:
            # Only the first event after the writer emptied the queue wakes it: with more queued, it
            # has not yet seen the queue empty and takes this one too (a set per event was a lock
            # and a notify for every event, two per call).
            self._wake.set()

    def _batch_done(
        self, futures: list[asyncio.Future[int] | None], count: int, seq_first: int, error: BaseException | None
    ) -> None:
        self._inflight -= count
        for i, future in enumerate(futures):
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(seq_first + i)
            else:
                future.set_exception(error)
        while self._waiting and self._inflight < self.config.max_queue:
            self._admit(self._waiting.popleft())

    @property
    def queued(self) -> int:
        """Events admitted and not yet durable (never above max_queue)."""
        return self._inflight

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
        self.chain = new_chain_id()
        now = time.time()
        record = ChainOpened(trail=self.trail, host=host_name(), pid=os.getpid(), key_id=self.key_id, links=links)
        line, head = seal(
            EventCore(chain=self.chain, seq=0, time=now, prev=genesis(self.chain), kind=GENESIS_KIND, body=record)
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        try:
            self._fd = os.open(os.path.join(self.dir, self.chain + CHAIN_SUFFIX), flags, 0o600)
            self._write_all(self._fd, line)
            self._fsync_open(self._fd)
            if self._signing is not None:
                self._cp_fd = os.open(os.path.join(self.dir, self.chain + CP_SUFFIX), flags, 0o600)
            dfd = os.open(self.dir, os.O_RDONLY)  # make the new names themselves durable
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            self._close_chain()
            raise
        self._seq, self._head = 0, head
        self._cp_seq, self._cp_time = -1, time.monotonic()
        self._maybe_checkpoint(force=False)  # seq 0: the genesis record is signed (and registered) at once
        log.info("audit chain %s in %s (links %d earlier chain(s))", self.chain, self.dir, len(links))

    def _close_chain(self) -> None:
        for fd in (self._fd, self._cp_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._cp_fd = -1

    def _run(self) -> None:
        cfg = self.config
        wait_s = min(cfg.checkpoint_every_s, 1.0) if self._checkpoints else 1.0
        while True:
            self._wake.wait(wait_s)
            self._wake.clear()
            while self._pending:
                batch = self._take(cfg.max_batch)
                if cfg.commit_delay_ms > 0 and len(batch) < cfg.max_batch:
                    time.sleep(cfg.commit_delay_ms / 1000)
                    batch.extend(self._take(cfg.max_batch - len(batch)))
                started = time.perf_counter()
                self._write_batch(batch)
                if self.on_flush is not None:
                    self.on_flush(time.perf_counter() - started)
                self._maybe_checkpoint(force=False)
            if self._stopping and not self._pending:
                break
            self._maybe_checkpoint(force=False)
        self._maybe_checkpoint(force=True)
        self._close_chain()

    def _take(self, n: int) -> list[_Item]:
        pending = self._pending
        out: list[_Item] = []
        while pending and len(out) < n:
            out.append(pending.popleft())
        return out

    def _write_batch(self, batch: list[_Item]) -> None:
        lines, futures = [], []
        seq, head, chain = self._seq, self._head, self.chain
        first = seq + 1
        now = time.time()
        for kind, payload, future in batch:
            try:
                kind, body = body_for(kind, payload)
                line, digest = seal(EventCore(chain=chain, seq=seq + 1, time=now, prev=head, kind=kind, body=body))
            except Exception as exc:  # a bad payload fails its own producer, not the batch
                log.exception("audit: cannot encode a %s event", kind)
                self._resolve([future], 1, 0, exc)
                continue
            seq, head = seq + 1, digest
            lines.append(line)
            futures.append(future)
        if not lines:
            return
        try:
            self._write_all(self._fd, b"".join(lines))
            self._fsync(self._fd)
        except OSError as exc:
            # The file's tail is now unknown: fail these producers and continue on a fresh chain.
            self.errors += 1
            log.error("audit: writing chain %s failed (%s); starting a new chain", chain, exc)
            self._resolve(futures, len(futures), 0, exc)
            self._close_chain()
            durable = {chain: (self._seq, self._head)}  # the file's tail holds lines that were never fsynced
            try:
                self._open_chain(durable)
            except OSError as exc2:
                log.error("audit: cannot open a new chain (%s)", exc2)
            return
        self._seq, self._head = seq, head
        self.written += len(lines)
        self.batches += 1
        self._resolve(futures, len(futures), first, None)

    def _resolve(
        self, futures: list[asyncio.Future[int] | None], count: int, first: int, error: BaseException | None
    ) -> None:
        assert self._loop is not None  # the writer thread runs only after start()
        try:
            self._loop.call_soon_threadsafe(self._batch_done, futures, count, first, error)
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
        cp = new_checkpoint(self._signing, self.key_id, self.chain, self._seq, self._head, time.time(), final=force)
        if self._cp_fd >= 0:
            try:
                os.write(self._cp_fd, encode_checkpoint(cp))
                self._fsync(self._cp_fd)
            except OSError as exc:
                log.error("audit: cannot write a checkpoint for %s (%s)", self.chain, exc)
                return
        self._cp_seq, self._cp_time = self._seq, time.monotonic()
        if self.heads is not None:  # only once durable in its file: the registry never runs ahead of it
            self.heads.offer(cp)
