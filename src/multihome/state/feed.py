"""In-process wake-ups for clients following a background response's events: the run on this replica
says "committed more" and the followers read them at once instead of at their next poll. Followers on
another replica poll the store instead (docs/responses.md "Background mode"), so nothing is lost if a
wake-up is missed: a wake-up only shortens a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Feed:
    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def publish(self, response_id: str) -> None:
        for event in self._waiting.get(response_id, ()):
            event.set()

    @contextlib.contextmanager
    def subscribe(self, response_id: str) -> Iterator[asyncio.Event]:
        """An event set by every publish for this response while the block runs (clear it before reading)."""
        event = asyncio.Event()
        waiting = self._waiting.setdefault(response_id, set())
        waiting.add(event)
        try:
            yield event
        finally:
            waiting.discard(event)
            if not waiting:
                self._waiting.pop(response_id, None)
