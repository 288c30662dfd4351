"""Threads for memory's CPU work (a search of a large namespace, an index's load or rebuild, a long text's
embedding), apart from the loop's default executor, where the usage spool's fsync, the KMS and the call log
of every tenant's calls run: one tenant's searches queued there held them all back.

    threads = TenantThreads(threads=4, per_tenant=2, name="mh-memory")
    found = await threads.run(tenant, index.search, query, top_k)

A tenant has at most `per_tenant` of the threads at once; its further work waits its turn (it is CPU work
that ends, so it waits rather than failing), and the other threads stay free for the other tenants. A job
counts until its thread returns, even if whoever awaited it has gone (a disconnected client's search).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from ...tenant_tally import TenantTurns

T = TypeVar("T")


class TenantThreads:
    def __init__(self, threads: int, per_tenant: int, name: str) -> None:
        self.threads, self.per_tenant, self.name = threads, per_tenant, name
        self._jobs = TenantTurns(per_tenant)  # each tenant's jobs waiting or running, and its turns
        self._pool: ThreadPoolExecutor | None = None  # made at the first job

    async def run(self, tenant: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._jobs.take(tenant)
        turns = self._jobs.turns[tenant]
        try:
            await turns.acquire()
        except BaseException:
            self._jobs.give(tenant)
            raise
        loop = asyncio.get_running_loop()

        def done(_: object) -> None:  # on the thread: the turns are the loop's
            with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile: nobody waits)
                loop.call_soon_threadsafe(self._give_back, tenant, turns)

        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
            job = self._pool.submit(partial(fn, *args, **kwargs))
        except BaseException:
            self._give_back(tenant, turns)
            raise
        job.add_done_callback(done)  # when the thread returns, or at once if cancelled before it started
        return await asyncio.wrap_future(job)

    def _give_back(self, tenant: str, turns: asyncio.Semaphore) -> None:
        turns.release()
        self._jobs.give(tenant)

    def close(self) -> None:
        """Let the threads go once their jobs end (a later job makes a new pool)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
