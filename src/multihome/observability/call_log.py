"""A JSON-lines log of every call (one CallRecord per line), for operators and log shippers.

Records are queued on the event loop and written by a background task in batches, off the
loop; no content, no secrets — only what CallRecord holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from ..accounting.record import CallRecord

_encoder = msgspec.json.Encoder()


class CallLog:
    def __init__(self, path: str, max_queue: int = 100_000) -> None:
        self.path = Path(path)
        self._queue: asyncio.Queue[CallRecord] | None = None
        self._max_queue = max_queue
        self._task: asyncio.Task | None = None
        self.dropped = 0
        self.on_flush: Callable[[float], None] | None = None  # seconds per appended batch (metrics)
        # The file ended in a line cut short (a process killed mid-append): the first write ends it first, so
        # a log shipper reads one bad line, not this process's first record glued onto it. (With --workers the
        # file is shared: a worker starting while another is mid-append may end that line early; as rare.)
        self._torn = False
        self._closing = False
        self._waiting = False  # the writer task waits for a record (not appending a batch)

    @property
    def depth(self) -> int:
        """Records waiting to be written."""
        return self._queue.qsize() if self._queue is not None else 0

    def record(self, call: CallRecord) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait(call)
        except asyncio.QueueFull:
            self.dropped += 1  # a log line, not a ledger: never hold a request up for it

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._torn = await asyncio.to_thread(_ends_torn, self.path)
        self._queue = asyncio.Queue(self._max_queue)
        self._task = asyncio.create_task(self._write_loop())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # A batch being appended is let finish: cancelled, its thread appended on while the rest went after it
        # from another thread (lines out of order, or close returning before the file had them). Only the
        # wait for the next record is cancelled.
        self._closing = True
        if self._waiting:
            task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: a loop that failed has lost its batch already, the rest is written below
        batch = self._take()
        if batch:
            await self._write(batch)

    async def _write_loop(self) -> None:
        queue = self._queue
        assert queue is not None  # made by start(), before this task
        while not self._closing:
            self._waiting = True
            first = await queue.get()
            self._waiting = False
            await self._write([first, *self._take()])

    def _take(self) -> list[CallRecord]:
        queue = self._queue
        assert queue is not None  # made by start(), before the writer task that calls this
        batch: list[CallRecord] = []
        while not queue.empty() and len(batch) < 4096:
            batch.append(queue.get_nowait())
        return batch

    async def _write(self, batch: list[CallRecord]) -> None:
        started = time.perf_counter()
        data = b"".join(_encoder.encode(c) + b"\n" for c in batch)
        if self._torn:
            data, self._torn = b"\n" + data, False
        await asyncio.to_thread(self._append, data)
        if self.on_flush is not None:
            self.on_flush(time.perf_counter() - started)

    def _append(self, data: bytes) -> None:
        with self.path.open("ab") as f:
            f.write(data)


def _ends_torn(path: Path) -> bool:
    """Whether the file ends in a partial line (no newline after its last byte)."""
    try:
        with path.open("rb") as f:
            if f.seek(0, 2) == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False
