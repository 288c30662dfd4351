"""Opened responses kept in memory, so continuing a conversation on the replica that served its last
turn opens nothing again: a byte-bounded LRU of stored responses by id.

Safe because a stored response never changes after it is written (ids are new every turn), and
because the store still asks the database whether every id of a chain exists before it uses the
cache (the tenant is checked on the cached record): a response deleted (on any replica) is never
served from here. That question is cheap while nothing was deleted: the database counts deletions
(`response_deletions`, only ever growing), and each entry remembers a count under which it was known to
exist (read before the write or read that put it here, or before a lookup that found it); while the count
read now is that one, nothing was deleted since, so the entry still exists. The cache holds
plaintext in the gateway's memory, as the answers it relays do; nothing of it is written anywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .store import StoredResponse


def held_cost(plain: bytes) -> int:
    """Bytes a record opened from its JSON `plain` holds, about: the text again, and an object for every
    JSON string (~26 bytes a quote; within 1 % under tracemalloc, 20 B to 20 kB of text). Its plaintext
    size alone let the cache hold 1.1-4.6x its bound (4.6x for short turns)."""
    return len(plain) + 26 * plain.count(b'"')


class OpenedResponses:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # id -> [record, size, the deletion count under which it was known to exist (None: unknown)]
        self._items: OrderedDict[str, list[Any]] = OrderedDict()
        self._bytes = 0
        self.deletions: int | None = None  # the largest count of deleted responses read from the database

    def get(self, response_id: str, tenant: str) -> StoredResponse | None:
        hit = self._items.get(response_id)
        if hit is None or hit[0].tenant != tenant:
            return None
        self._items.move_to_end(response_id)
        return cast("StoredResponse", hit[0])

    def holds(self, response_id: str) -> bool:
        """Whether the id is cached: a plain membership test, safe from a database thread (one C call
        on the dict, no reordering), for deciding which rows a read must fetch."""
        return response_id in self._items

    def held_chain(self, response_id: str, tenant: str, limit: int) -> list[str] | None:
        """The ids of the response and every ancestor, oldest first, when all are cached (the tenant's), at
        most `limit` of them; else None. A walk by `previous_response_id`, nothing reordered (the chain's
        read does that). The links are the stored rows' own: a response never changes once stored."""
        items, rid = self._items, response_id
        ids: list[str] = []
        for _ in range(limit):
            hit = items.get(rid)
            if hit is None or hit[0].tenant != tenant:
                return None
            ids.append(rid)
            prev = hit[0].previous_response_id
            if prev is None:
                ids.reverse()
                return ids
            rid = prev
        return None

    def checked(self, ids: list[str]) -> int | None:
        """The deletion count under which every one of `ids` (all held) was known to exist; None if they differ."""
        items = self._items
        count = items[ids[0]][2]
        return count if all(items[i][2] == count for i in ids) else None

    def saw(self, deletions: int, ids: list[str] | None) -> None:
        """The database's deletion count, just read; `ids`: held records found to exist after it was read."""
        if self.deletions is None or deletions > self.deletions:
            self.deletions = deletions
        for i in ids or ():
            hit = self._items.get(i)
            if hit is not None:
                hit[2] = deletions

    def put(self, record: StoredResponse, size: int, deletions: int | None = None) -> None:
        """A record just written or read, holding `size` bytes (held_cost); `deletions`: the count (`self.deletions`) read before that write or
        read began, under which it is known to exist (None: it will be looked up when next used)."""
        if size > self.max_bytes:
            return
        self.drop(record.id)
        self._items[record.id] = [record, size, deletions]
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old[1]

    def drop(self, response_id: str) -> None:
        old = self._items.pop(response_id, None)
        if old is not None:
            self._bytes -= old[1]
