"""Leases of Redis counter capacity, so most admissions of a replica need no Redis round trip.

A lease on a counter is capacity this process has already added to the Redis counter (the admission
script grants it, only under the limit: counters_lua) and not used yet. The sum over replicas of what
is used plus what is leased is in the counter, so no replica can admit past a hard limit from its
leases. An admission whose every counter has enough lease (and, with deployment alternatives, whose
first group has: the script charges the first group that fits, so only that one is decided here) is
admitted from them in process; any other goes to Redis as before, handing back this process's
leases of its counters in the same call (so what it is refused is not held by itself) and asking for
new ones. A soft budget never refuses, so it needs no lease: its increment rides along with the
settlements once the counter exists (it was made by an admission through Redis in this generation).

What is approximate: the value an admission from a lease reports (x-ratelimit-remaining-*, soft
budget warnings) is the counter as Redis reported it at the last grant plus what this process used
since; it includes other replicas' unused leases. docs/metering.md "Leases" has the bounds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from .counters import Plan

GRANT_DIVISOR = 8  # a grant is at most 1/8 of what is left under the limit (counters_lua.grant)
_HORIZON_S = 0.25  # a lease sized to last about this long at the recent rate: ~4 Redis calls a second a counter
_MIN_CALLS = 4  # ... and to at least this many increments of the last admission's size
Snapshot = dict[str, tuple["Lease", int, int]]


class Lease:
    __slots__ = (
        "left",
        "base",
        "used",
        "incr",
        "want",
        "limit",
        "expire",
        "soft",
        "ready",
        "asking",
        "taken",
        "since",
        "rate",
        "hits",
        "seen",
    )

    def __init__(self, limit: int, incr: int, expire: int, soft: bool) -> None:
        self.left = 0  # granted and not used: in the Redis counter already
        # The counter's value is about base + used: `used` is what this process added from the lease and
        # settled, and grows only by that; `base` is set from each answer of Redis (_rebase).
        self.base = 0
        self.used = 0
        self.incr = incr  # the last admission's increment: no lease smaller than one is granted
        self.want = 0  # the size asked for last
        self.limit = limit
        self.expire = expire  # when the Redis key expires (ms; 0: never): the lease dies with it
        self.soft = soft
        self.ready = False  # Redis has answered an admission of it (the key exists; base is known)
        self.asking = False  # a grant of it is in flight: one at a time, or a tick's batch would pile them up
        self.taken = 0  # taken from the lease since `since` (the gross rate sizes the next grant)
        self.since = time.monotonic()
        self.rate = 0.0  # increments a second, smoothed
        self.hits = 0  # admissions from the lease: `idle` compares it with what it saw last time
        self.seen = 0


class Leases:
    def __init__(self) -> None:
        self.by_key: dict[str, Lease] = {}
        self.due: dict[str, Lease] = {}  # below half their size: topped up with the sender's next call

    def take(self, plan: Plan, pending: dict[str, int]) -> list[int] | None:
        """The counters' values after admitting `plan` from the leases, or None (nothing changed) when a
        counter's lease is short: the admission then goes to Redis. Soft budgets' increments go to
        `pending` (the settlements to send)."""
        # A limit changed since the grant (new rules) goes to Redis: the lease was granted under the old one.
        get = self.by_key.get
        for key, limit, reserve, hard, _ in plan.budgets:
            e = get(key)
            if e is None or not e.ready or (hard and (e.left < reserve or e.limit != limit)):
                return None
        for key, limit, incr in plan.rates:
            e = get(key)
            if e is None or e.left < incr or e.limit != limit:
                return None
        group = plan.groups[0] if plan.groups else ()
        for key, limit, incr in group:
            e = get(key)
            if e is None or e.left < incr or e.limit != limit:
                return None
        values = []
        by_key = self.by_key
        for key, _, reserve, hard, _ in plan.budgets:
            e = by_key[key]
            e.used += reserve
            if hard:
                self._spend(key, e, reserve)
            else:
                e.hits += 1  # in use: `idle` keeps it
                if reserve:
                    pending[key] = pending.get(key, 0) + reserve
            values.append(e.base + e.used)
        for key, _, incr in (*plan.rates, *group):
            e = by_key[key]
            e.used += incr
            self._spend(key, e, incr)
            values.append(e.base + e.used)
        return values

    def take_usual(
        self, budget: str, budget_limit: int, reserve: int, requests: str, rpm: int, tokens: str, tpm: int, est: int
    ) -> tuple[int, int, int] | None:
        """`take` of the usual shape (one hard budget, one requests- and one tokens-per-minute counter, no
        deployment alternatives), written out: the three counters' values after it, or None (nothing
        changed) when a lease is short. No Plan, values list or loops: it runs on nearly every admission."""
        get = self.by_key.get
        b, r, t = get(budget), get(requests), get(tokens)
        if (
            b is None
            or r is None
            or t is None
            or not b.ready
            or b.left < reserve
            or b.limit != budget_limit
            or r.left < 1
            or r.limit != rpm
            or t.left < est
            or t.limit != tpm
        ):
            return None
        b.used += reserve
        self._spend(budget, b, reserve)
        r.used += 1
        self._spend(requests, r, 1)
        t.used += est
        self._spend(tokens, t, est)
        return b.base + b.used, r.base + r.used, t.base + t.used

    def _spend(self, key: str, e: Lease, incr: int) -> None:
        e.left -= incr
        e.hits += 1
        e.taken += incr
        e.incr = incr
        if e.left * 2 < e.want and not e.asking:
            e.asking = True
            self.due[key] = e

    def ask(self, key: str, limit: int, incr: int, expire: int, soft: bool, pending: dict[str, int]) -> int:
        """An admission of `key` goes to Redis: hand this process's lease of it back in the same call
        (into `pending`, sent before the admission) and say how much to ask for (0: nothing, for a soft
        budget or while a grant is in flight)."""
        e = self.by_key.get(key)
        if e is None:
            e = self.by_key[key] = Lease(limit, incr, expire, soft)
        elif e.left:
            pending[key] = pending.get(key, 0) - e.left
            e.left = 0
        if e.asking:
            # A grant in flight was asked for under e.limit: keep that, so take() does not admit from it
            # under another limit (the next admission comes here again and hands it back).
            e.incr, e.expire, e.soft = incr, expire, soft
            return 0
        e.limit, e.incr, e.expire, e.soft = limit, incr, expire, soft
        if soft:
            return 0
        e.want = want = self._size(e, incr)
        if want:  # (0 when this admission reserves nothing on it: no grant, so no answer would clear `asking`)
            e.asking = True
            self.due.pop(key, None)
        return want

    def _size(self, e: Lease, incr: int) -> int:
        now = time.monotonic()
        elapsed = now - e.since
        if elapsed > 0.01:
            rate = e.taken / elapsed
            e.rate = rate if not e.rate else (e.rate + rate) / 2
            e.taken, e.since = 0, now
        return max(_MIN_CALLS * incr, int(e.rate * _HORIZON_S))

    def snapshot(self, keys: list[str]) -> Snapshot:
        """(lease, left, used) of each leased key as a call is sent: its answer is read against them."""
        get = self.by_key.get
        return {k: (e, e.left, e.used) for k in keys if (e := get(k)) is not None}

    def _rebase(self, key: str, e: Lease, value: int, then: Snapshot) -> None:
        # Redis had `value` with this process's lease in it. What the lease and the use did while the
        # call was away cancels out of value - left as sent + used since sent (`used` only grows by
        # what this process adds, so this can be done more than once with the same answer).
        was = then.get(key)
        left_then, used_then = (was[1], was[2]) if was is not None and was[0] is e else (0, e.used)
        e.base = value - left_then - used_then

    def answered(
        self,
        key: str,
        limit: int,
        incr: int,
        expire: int,
        soft: bool,
        value: int,
        grant: int,
        asked: bool,
        then: Snapshot,
    ) -> None:
        """Redis admitted an admission of `key` (through the script): the counter is `value` after it,
        and `grant` more is leased (added to the counter after `value`). `then`: the snapshot as sent."""
        e = self.by_key.get(key)
        if e is None:  # dropped since it asked (a new epoch): the admission ran in the new counters
            e = self.by_key[key] = Lease(limit, incr, expire, soft)
        e.ready = True
        self._rebase(key, e, value, then)
        if asked:
            e.asking = False
            e.left += grant

    def no_topups(self) -> None:
        """Forget the top-ups due (the leases are being given back)."""
        for e in self.due.values():
            e.asking = False
        self.due = {}

    def topups(self) -> list[tuple[str, Lease]]:
        """The leases to top up in the next call, with their sizes set (and forgotten as due)."""
        due = [(k, e) for k, e in self.due.items() if self.by_key.get(k) is e]
        self.due = {}
        for _, e in due:
            e.want = self._size(e, e.incr)
        return due

    def topped_up(self, key: str, e: Lease, value: int, grant: int, then: Snapshot) -> None:
        """A top-up's answer: the counter was `value` (with this process's lease in it) before `grant`."""
        e.asking = False
        if self.by_key.get(key) is not e:
            return  # pruned meanwhile (its key expired): the grant died with it
        self._rebase(key, e, value, then)
        e.left += grant

    def failed(self, key: str) -> None:
        """A grant of `key` was asked for and not answered: ask again later (what Redis may have granted
        meanwhile stays counted until the key expires, as a reservation lost with its connection)."""
        e = self.by_key.get(key)
        if e is not None:
            e.asking = False

    def settle(self, key: str, delta: int) -> int:
        """A settlement of `key`: what goes to Redis. A reservation given back (delta < 0) goes to the
        lease instead, up to twice its size: it is in the counter already."""
        e = self.by_key.get(key)
        if e is None:
            return delta
        e.used += delta
        if delta >= 0 or e.soft or not e.ready:
            return delta
        room = 2 * max(e.want, e.incr) - e.left
        if room <= 0:
            return delta
        kept = min(-delta, room)
        e.left += kept
        return delta + kept

    def give_back(self) -> Iterator[tuple[str, int]]:
        """Every unused lease, as the negative deltas that return it (and forget it)."""
        for key, e in self.by_key.items():
            if e.left:
                yield key, -e.left
                e.left = 0

    def idle(self) -> Iterator[tuple[str, int]]:
        """The leases no admission took from since the last call, as the negative deltas that return
        them (a replica that stops getting calls would otherwise hold them, and others be refused); and
        forget them, so the map holds only counters in use (a tenant's keys and teams are unbounded, and
        a `total` budget's counter never expires, so `prune` would never drop it). A lease with a grant
        in flight stays (its answer is handed to it); a forgotten counter's next admission goes to Redis,
        and a settlement of it goes to Redis whole."""
        by_key = self.by_key
        for key, e in list(by_key.items()):
            if e.hits == e.seen and not e.asking:
                if e.left:
                    yield key, -e.left
                    e.left = 0
                del by_key[key]
            e.seen = e.hits

    def held(self, key: str) -> int:
        e = self.by_key.get(key)
        return e.left if e is not None else 0

    def drop(self) -> None:
        """The counters were emptied and re-seeded: the leases are not in them."""
        self.by_key, self.due = {}, {}

    def prune(self, now_ms: int) -> None:
        """Forget the leases of keys expired by now (a rate window's lease dies with its window)."""
        for key in [k for k, e in self.by_key.items() if e.expire and e.expire <= now_ms]:
            del self.by_key[key]
            self.due.pop(key, None)
