"""The memory store's per-namespace locks, and when one may be forgotten.

A namespace's lock keeps searches out while its index is rebuilt or caught up. A lock is made on first use
and forgotten once nobody holds it, waits for it, or was woken to take it: each lock counts its users itself
(one more before a task waits, one less after it releases). asyncio.Lock tells only whether it is held
(`locked()`); who waits is its private `_waiters`, and a waiter woken by a release is neither held nor
necessarily still listed there until it runs.

A task takes the lock from the map each time it enters it (never a lock kept from earlier): one forgotten
while unused and made again is then the same lock for every task that enters it afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Container
from types import TracebackType
from typing import Generic, TypeVar

K = TypeVar("K")


class NamespaceLock:
    """An asyncio.Lock that counts the tasks holding it or waiting for it."""

    __slots__ = ("_lock", "users")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.users = 0

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self._lock.acquire()
        except BaseException:  # cancelled while waiting: not a user any more
            self.users -= 1
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()
        self.users -= 1


class NamespaceLocks(Generic[K]):
    """Locks by namespace; once more than `keep_idle` beyond those `held()` names, the idle ones go."""

    __slots__ = ("_locks", "keep_idle")

    def __init__(self, keep_idle: int) -> None:
        self._locks: dict[K, NamespaceLock] = {}
        self.keep_idle = keep_idle

    def __len__(self) -> int:
        return len(self._locks)

    def get(self, key: K, held: Collection[K]) -> NamespaceLock:
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) >= self.keep_idle + len(held):
                self.drop_idle(held)
            lock = self._locks[key] = NamespaceLock()
        return lock

    def drop_idle(self, held: Container[K]) -> None:
        """Forget the locks nobody uses, but those of the namespaces in `held`."""
        idle = [k for k, lock in self._locks.items() if not lock.users and k not in held]
        for key in idle:
            del self._locks[key]
