"""Large request bodies are decoded and checked on a worker thread, not on the event loop.

A body may be up to `server.max_body_bytes` (20 MiB by default). Decoding one and walking it (the typed
decode, the checks of every message and part, a translation into the canonical request) took the loop
for 25-95 ms for a 20 MiB chat body of long strings and ~250 ms for one of ~700,000 tiny content parts
(docs/hostile-input.md): every other tenant's calls waited that long. Over `OFF_LOOP_OVER` bytes a door
hands its parse to this pool instead. msgspec holds the GIL while one decode call runs, so the loop
still waits for the longest single C call (one pass over the body), but no longer for the whole parse,
and never for the Python checks between the passes. The Responses door also translates a large turn
into its chat request (built, encoded and decoded again) here.

The pool has `THREADS` threads: at most that many large bodies are being decoded at once (their decoded
objects, several times a body's size, are what the bound keeps in memory); more wait in the pool's
queue as the bytes they already are. A body at or under the threshold never enters the pool, so it
never waits behind a large one, and its cost is one length comparison in the door; the one exception is a
Responses input_tokens count with a stored context (responses/input_tokens.py), whose size is not known
before it is translated.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

# Chosen by measurement (bench on this machine): a parse costs ~1 ms a MiB of long strings and up to
# ~13 ms a MiB of tiny content parts; a hop to a thread and back ~0.1 ms. Under 256 KiB a body holds the
# loop at most ~3 ms inline (~0.25 ms typically), less than the hop is worth.
OFF_LOOP_OVER = 256 * 1024
THREADS = 2

_T = TypeVar("_T")


class BigBodies:
    """The pool large bodies are decoded on: made on the first large body (after any fork of
    `--workers`), one per gateway."""

    def __init__(self, threads: int = THREADS) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def parse(self, parse: Callable[[bytes], _T], body: bytes) -> _T:
        """`parse(body)` on a pool thread; its exceptions (a 400 for a malformed body) raised here."""
        return await self.run(functools.partial(parse, body))

    async def decode(self, parse: Callable[[bytes], _T], body: bytes) -> _T:
        """`parse(body)`: inline for a body at or under OFF_LOOP_OVER (cheaper than the hop), else on the pool."""
        return parse(body) if len(body) <= OFF_LOOP_OVER else await self.parse(parse, body)

    async def run(self, work: Callable[[], _T]) -> _T:
        """`work()` (a large request's decoding or translation) on a pool thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="mh-body-decode")
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)
