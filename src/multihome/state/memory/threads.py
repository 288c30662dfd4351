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

T = TypeVar("T")


class _Share:
    __slots__ = ("gate", "users")

    def __init__(self, per_tenant: int) -> None:
        self.gate = asyncio.Semaphore(per_tenant)
        self.users = 0  # waiting or running: the share is dropped when none is


class TenantThreads:
    def __init__(self, threads: int, per_tenant: int, name: str) -> None:
        self.threads, self.per_tenant, self.name = threads, per_tenant, name
        self._shares: dict[str, _Share] = {}
        self._pool: ThreadPoolExecutor | None = None  # made at the first job

    async def run(self, tenant: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        share = self._shares.get(tenant)
        if share is None:
            share = self._shares[tenant] = _Share(self.per_tenant)
        share.users += 1
        try:
            await share.gate.acquire()
        except BaseException:
            self._leave(tenant, share)
            raise
        loop = asyncio.get_running_loop()

        def done(_: object) -> None:  # on the thread: the share is the loop's
            with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile: nobody waits)
                loop.call_soon_threadsafe(self._give_back, tenant, share)

        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
            job = self._pool.submit(partial(fn, *args, **kwargs))
        except BaseException:
            self._give_back(tenant, share)
            raise
        job.add_done_callback(done)  # when the thread returns, or at once if cancelled before it started
        return await asyncio.wrap_future(job)

    def _give_back(self, tenant: str, share: _Share) -> None:
        share.gate.release()
        self._leave(tenant, share)

    def _leave(self, tenant: str, share: _Share) -> None:
        share.users -= 1
        if not share.users and self._shares.get(tenant) is share:
            del self._shares[tenant]

    def close(self) -> None:
        """Let the threads go once their jobs end (a later job makes a new pool)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
