"""A cap on the in-process budget counters of teams and keys, which a store reads back when dropped.

A `"*"` budget of the team or key scope keeps a counter per team or subject, and a tenant's identity
provider can mint any number of subjects (or a tenant admin any number of keys): a `total` budget's
counter never expires, and a day's or month's lives until a day after its period. At most `cap` such
counters are kept: when the limiter makes an admission shape (a caller's first call of a minute; the
only place new counters come from) and a look finds more than three quarters of the cap, the
oldest-made that no call in flight holds a reservation on are dropped, down to half the cap, and every
shape with them, so none names a dropped counter. A dropped counter held settled spend only, and that
spend is in the store's usage rows (every settled call's row, which the writer commits before the
read): when its caller comes back, the limiter has the store read it back before admitting (Metering's
`seed_dropped`), as a restart would. Without a store nothing is dropped (memory is the only record).
Tenant counters are one per stored tenant: never dropped. docs/metering.md "In-process counters are
capped".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .periods import Period
from .rules import BudgetSpec

MAX_BUDGET_COUNTERS = 100_000  # in-process team and key budget counters kept (with a store)


class BudgetBound:
    __slots__ = ("cap", "prefixes", "dropped", "wid", "next_scan")

    def __init__(self, prefix: str, cap: int = MAX_BUDGET_COUNTERS) -> None:
        self.cap = cap
        self.prefixes = (f"{prefix}b:team:", f"{prefix}b:key:")  # rules.budget_base of the two scopes
        self.dropped = False  # a counter was dropped: a missing one may have spend in the store
        self.wid = -1  # the minute the counters were last looked over in
        # Past this many counters of any kind the budget counters are counted again: by then as many as the
        # room left under the cap may have been made. Counters expire only at a minute's turn, and the limiter
        # prunes them then, before `due`: within a minute the count of all counters only grows.
        self.next_scan = 0  # (the first shape counts them)

    def due(self, kept: int, wid: int) -> bool:
        """Whether to look the counters over (`kept` of them, in minute `wid`): past `next_scan`, or the
        first time in a minute (expired rate windows were pruned: the room under the cap is counted anew)."""
        if wid != self.wid:
            self.wid = wid
            if kept > self.cap // 2:
                return True
            # Not looked over: the last look's room counted the counters just pruned, so it is set anew. With
            # all of them at most the cap, the budget counters among them are too.
            self.next_scan = self.cap
            return False
        return kept > self.next_scan

    def drop_idle(self, values: dict[str, int], expiries: dict[str, int], held: Iterable[str]) -> int:
        """Past three quarters of the cap, drop the oldest-made team and key budget counters not in `held`
        down to half the cap; how many were dropped. The next look comes after at least a quarter of the cap
        more counters (one look reads every counter: looks close together, under counters made one by one
        near the cap, cost a read of them all per caller), and before the cap can be passed."""
        keys = [k for k in values if k.startswith(self.prefixes)]
        dropped = 0
        if len(keys) > self.cap * 3 // 4:
            excess = len(keys) - self.cap // 2
            keep = set(held)
            for key in keys:  # a dict keeps the order counters were made in
                if dropped >= excess:
                    break
                if key in keep:
                    continue
                del values[key]
                expiries.pop(key, None)
                dropped += 1
            if dropped:
                self.dropped = True
        # (more than cap - a quarter kept only while calls in flight hold them: then a quarter more at most)
        self.next_scan = len(values) + max(1, self.cap // 4, self.cap - (len(keys) - dropped))
        return dropped

    def seeding(self, items: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """Of a seed's (key, value, expire_at_ms) items, those to set: without the team and key ones when they
        are more than three quarters of the cap (every subject that ever spent, at start), which are then
        read back one caller at a time, as dropped ones are."""
        prefixes = self.prefixes
        theirs = sum(1 for key, _, _ in items if key.startswith(prefixes))
        if theirs <= self.cap * 3 // 4:
            return items
        self.dropped = True
        return [item for item in items if not item[0].startswith(prefixes)]

    def missing(
        self, budgets: Sequence[BudgetSpec], periods: Mapping[str, Period], values: Mapping[str, int]
    ) -> list[tuple[BudgetSpec, Period]]:
        """The team and key budgets among `budgets` whose counter of the current period is not kept, once
        any was dropped (before that, a missing counter is a new one: nothing was spent on it)."""
        if not self.dropped:
            return []
        out = []
        for spec in budgets:
            if spec.scope != "tenant":
                per = periods[spec.period]
                if spec.base + per.bucket not in values:
                    out.append((spec, per))
        return out
