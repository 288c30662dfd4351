"""Budget and rate counters: check-all-then-apply-all, in process or (counters_redis) in Redis.

One admission is a `Plan`: budget counters (hard ones must fit, soft ones only count), rate
counters (all must fit) and deployment alternatives (the first whose counters all fit is
charged; none fitting refuses). Nothing is applied unless everything fits, so a refused call
leaves no trace. Values are integers (budget: nano-units of a currency; rates: requests/tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

OK, BUDGET, RATE, DEPLOYMENT = 0, 1, 2, 3
# A flat admission of one shape's counters: (the admission's values, now in ms) -> the counters after, or None.
FlatAdmit = Callable[[Sequence[int], int], "list[int] | None"]


@dataclass(slots=True)
class Plan:
    budgets: list[tuple[str, int, int, bool, int]] = field(
        default_factory=list
    )  # key, limit, reserve, hard, expire_at_ms (0 = never)
    rates: list[tuple[str, int, int]] = field(default_factory=list)  # key, limit, increment
    groups: list[list[tuple[str, int, int]]] = field(default_factory=list)  # per deployment: counters
    rate_expire_ms: int = 0  # rate keys outlive their window a little so settlements still find them


@dataclass(slots=True)
class Outcome:
    code: int  # OK, or which kind refused
    index: int = -1  # refusing budget/rate index; on OK the chosen group (-1: none)
    values: list[int] = field(default_factory=list)  # OK: budgets, rates, chosen group after applying; else [used]
    gen: int = 0  # the counters' generation the admission was counted in (see RedisCounters.generation)


class LocalCounters:
    """In-process counters: the same semantics as the Redis script, for one process."""

    shared: ClassVar[Literal[False]] = False  # Literal: `if counters.shared` tells the two kinds apart
    generation = 0  # in-process counters never vanish under a running process

    def __init__(self) -> None:
        self._v: dict[str, int] = {}
        self._exp: dict[str, int] = {}
        self._admits = 0

    def _get(self, key: str, now_ms: int) -> int:
        exp = self._exp.get(key)
        if exp is not None and exp <= now_ms:
            self._v.pop(key, None)
            self._exp.pop(key, None)
            return 0
        return self._v.get(key, 0)

    def admit(self, plan: Plan, now_ms: int) -> Outcome:
        self._admits += 1
        if self._admits % 4096 == 0:
            self.prune(now_ms)
        get = self._get
        for i, (key, limit, reserve, hard, _) in enumerate(plan.budgets):
            used = get(key, now_ms)
            if hard and used + reserve > limit:
                return Outcome(BUDGET, i, [used])
        for i, (key, limit, incr) in enumerate(plan.rates):
            used = get(key, now_ms)
            if used + incr > limit:
                return Outcome(RATE, i, [used])
        chosen = -1
        for g, counters in enumerate(plan.groups):
            if all(get(k, now_ms) + incr <= limit for k, limit, incr in counters):
                chosen = g
                break
        if plan.groups and chosen < 0:
            return Outcome(DEPLOYMENT, -1, [])
        v, exp, values = self._v, self._exp, []
        for key, _, reserve, _, expire in plan.budgets:
            v[key] = value = v.get(key, 0) + reserve
            if expire:
                exp[key] = expire
            values.append(value)
        for key, _, incr in [*plan.rates, *(plan.groups[chosen] if chosen >= 0 else ())]:
            v[key] = value = v.get(key, 0) + incr
            exp[key] = plan.rate_expire_ms
            values.append(value)
        return Outcome(OK, chosen, values)

    def admit_flat(
        self, rows: Sequence[tuple[str, float, int]], values: Sequence[int], expiring, now_ms: int
    ) -> list[int] | None:
        """`admit` for a plan of budgets and rates only (no deployment alternatives): one row per counter,
        its key, the most it may reach (+inf for a soft budget) and the index of its increment in
        `values`. The counters' values after applying, or None, having changed nothing, when one does not
        fit (`admit` then says which). The keys are distinct and of the current period and minute, so none
        can have expired: no expiry is looked up. `expiring` ((key, expire_at_ms) of those that expire) is
        set when a counter is new: an existing one has its expiry already, the same (a key is one period's)."""
        return self.flat(rows, expiring)(values, now_ms)

    def flat(self, rows: Sequence[tuple[str, float, int]], expiring) -> FlatAdmit:
        """`admit_flat` for these rows, as a function of (values, now_ms) made once per admission shape
        (metering/limiter.py). Up to three counters (the usual shapes) it is written out: under callgrind
        the maps and zips of a general form cost ~1,000 instructions each made and freed, ~6,000 a call."""
        v = self._v  # never replaced: pruning pops from it
        get = v.get
        exp = self._exp
        counters = self

        if len(rows) == 3:
            (k1, l1, i1), (k2, l2, i2), (k3, l3, i3) = rows

            def three(values: Sequence[int], now_ms: int) -> list[int] | None:
                counters._admits = admits = counters._admits + 1
                if not admits & 4095:
                    counters.prune(now_ms)
                a, b, c = get(k1, 0) + values[i1], get(k2, 0) + values[i2], get(k3, 0) + values[i3]
                if a > l1 or b > l2 or c > l3:
                    return None
                n = len(v)
                v[k1], v[k2], v[k3] = a, b, c
                if len(v) != n:
                    exp.update(expiring)
                return [a, b, c]

            return three
        if len(rows) == 2:
            (k1, l1, i1), (k2, l2, i2) = rows

            def two(values: Sequence[int], now_ms: int) -> list[int] | None:
                counters._admits = admits = counters._admits + 1
                if not admits & 4095:
                    counters.prune(now_ms)
                a, b = get(k1, 0) + values[i1], get(k2, 0) + values[i2]
                if a > l1 or b > l2:
                    return None
                n = len(v)
                v[k1], v[k2] = a, b
                if len(v) != n:
                    exp.update(expiring)
                return [a, b]

            return two
        rows = list(rows)
        keys = [key for key, _, _ in rows]

        def general(values: Sequence[int], now_ms: int) -> list[int] | None:
            counters._admits = admits = counters._admits + 1
            if not admits & 4095:
                counters.prune(now_ms)
            after: list[int] = []
            for key, limit, i in rows:
                value = get(key, 0) + values[i]
                if value > limit:
                    return None
                after.append(value)
            n = len(v)
            v.update(zip(keys, after))
            if len(v) != n:
                exp.update(expiring)
            return after

        return general

    def tables(self) -> tuple[dict[str, int], dict[str, int]]:
        """The counters' values and expiries (expire_at_ms) by key, for an admission written out over them
        (metering/limiter.py `_usual_admission`: the same check-all-then-apply-all as `flat`). Never replaced."""
        return self._v, self._exp

    def adjust(self, deltas: Iterable[tuple[str, int]], made: Mapping[str, int] | None = None) -> None:
        """Settle: add deltas to counters that still exist (an expired window is not revived). A counter
        named in `made` (key -> expire_at_ms, of the current window) is made first if it does not exist: a
        deployment's own count of what the call did there, when no call was charged on it yet (limiter.py)."""
        v = self._v
        if made:
            for key, expire in made.items():
                if key not in v:
                    v[key] = 0
                    self._exp[key] = expire
        for key, delta in deltas:
            if delta and key in v:
                v[key] += delta

    def adjust2(self, key1: str, delta1: int, key2: str, delta2: int) -> None:
        """`adjust` of two deltas (Ticket.settle's usual shape), without their tuples and the loop."""
        v = self._v
        if delta1 and key1 in v:
            v[key1] += delta1
        if delta2 and key2 in v:
            v[key2] += delta2

    async def seed(self, items: list[tuple[str, int, int]]) -> None:
        """Set each (key, value, expire_at_ms) that does not exist yet: a running counter wins."""
        for key, value, expire_at_ms in items:
            if key not in self._v:
                self._v[key] = value
                if expire_at_ms:
                    self._exp[key] = expire_at_ms

    async def read(self, keys: list[str], now_ms: int) -> list[int]:
        return [self._get(k, now_ms) for k in keys]

    def prune(self, now_ms: int) -> None:
        """Drop the counters expired at `now_ms`."""
        for key in [k for k, e in self._exp.items() if e <= now_ms]:
            self._v.pop(key, None)
            self._exp.pop(key, None)

    async def drain(self) -> None:
        pass  # settlements apply at once

    async def start(self) -> None:
        pass

    async def claim(self) -> None:
        pass  # nothing shared to join

    async def close(self) -> None:
        pass
