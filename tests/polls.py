"""A SnapshotCache's promise checked on its own clock: a change committed through another replica is
applied by the first poll that starts after the commit (storage/snapshot.py: "within interval_s + one
snapshot load"). Counting polls, not seconds, keeps the check the same on a busy machine, where the
polls themselves run late. The spy wraps the store's `version()` (the cache's poll); the real query runs.

    polls = Polls(store)            # before the cache starts polling it
    await other.make_a_change()
    polls.mark()                    # right after the commit returned
    ... wait (generous deadline) until the cache serves the change ...
    assert polls.since_mark() <= 1  # the first poll that began after the commit applied it
"""

from __future__ import annotations

from typing import Any


class Polls:
    def __init__(self, store: Any) -> None:
        self.count = 0
        self._mark = 0
        real = store.version

        async def version() -> int:
            self.count += 1
            return await real()

        store.version = version

    def mark(self) -> None:
        self._mark = self.count

    def since_mark(self) -> int:
        """Polls begun since `mark()`. A poll already under way at the mark may read the new version (0)."""
        return self.count - self._mark
