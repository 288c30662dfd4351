"""Admission before a call (budgets by reservation, rate limits) and settlement after it.

`admit` reserves the call's worst-case cost on every budget that applies and counts it against
every rate limit, in one atomic step (one Lua script with Redis, a few dict operations without).
The returned `Ticket` is settled exactly once: by `Metering.record(call)` with the actual cost,
by `release()` when the call produced no answer, or by the sweeper after `ticket_ttl_s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import msgspec

from ..aio import cancel_and_wait
from ..config.metering import MeteringConfig
from ..schema import header_text
from ..schema.errors import ApiError, no_retry
from ..schema.principal import Principal
from .budget_bound import BudgetBound
from .counters import BUDGET, DEPLOYMENT, OK, FlatAdmit, Outcome, Plan
from .periods import WINDOW_MS, Period, Periods, go_duration, window_reset
from .prices import PriceTable, reserve_nanos
from .rules import BudgetSpec, Rules, window_expire_ms, window_key

if TYPE_CHECKING:
    from .counters import LocalCounters
    from .counters_redis import RedisCounters  # redis-py only when the config names a Redis

log = logging.getLogger("multihome.metering")
_NO_HEADERS: list[tuple[bytes, bytes]] = []
# The usual shape's admission (_usual_admission): (request id, prompt tokens, max output tokens, choices, now in ms)
UsualAdmit = Callable[[str, int, "int | None", int, int], "Ticket | None"]
_NO_SKIP: frozenset[str] = frozenset()
_monotonic = time.monotonic
_ceil = math.ceil
# More output than any model makes, yet small enough that a reservation stays an exact integer in
# Redis (2^53) and cannot overflow INCRBY: an absurd max_tokens x n is refused, not a script error.
_MAX_OUT_TOKENS = 1 << 32
_UNLIMITED = float("inf")  # a soft budget's limit in a flat admission: it counts, never refuses
# An admission's increments are picked from [0, 1, estimated tokens, the reservation in each currency]:
_ZERO, _ONE, _EST, _RESERVE = 0, 1, 2, 3


class _Slots:
    """The counters settlement corrects: budgets (to the call's cost in their currency) and tokens per
    minute (to the tokens it used); a request, once counted, stays counted. Made once per shape."""

    __slots__ = ("keys", "kinds", "currencies", "expires", "pair", "local")

    def __init__(self) -> None:
        self.keys: list[str] = []
        # What each counter is settled to, picked from [tokens, the cost if in currencies[0], ...]
        self.kinds: list[int] = []
        self.currencies: list[str] = []
        self.expires: list[int] = []  # expire_at_ms of each (for a re-seed)
        # The usual shape, one budget and one tokens-per-minute limit: (the budget's counter, its currency,
        # the tokens counter), which Ticket.settle corrects without the general path's maps; else None.
        self.pair: tuple[str, str, str] | None = None
        # In-process counters' values (LocalCounters.tables), which Ticket.settle corrects the pair in
        # itself; None for shared counters (Redis), whose generation settlement must compare.
        self.local: dict[str, int] | None = None

    def add(self, key: str, currency: str | None, expire_ms: int) -> None:
        if currency is None:
            kind = 0
        else:
            if currency not in self.currencies:
                self.currencies.append(currency)
            kind = 1 + self.currencies.index(currency)
        self.keys.append(key)
        self.kinds.append(kind)
        self.expires.append(expire_ms)
        self.pair = (self.keys[0], self.currencies[0], key) if self.kinds == [1, 0] else None

    def copy(self) -> _Slots:
        new = _Slots()
        new.keys, new.kinds, new.currencies, new.expires, new.pair, new.local = (
            [*self.keys],
            [*self.kinds],
            [*self.currencies],
            [*self.expires],
            self.pair,
            self.local,
        )
        return new


_NO_SLOTS = _Slots()


class Ticket(msgspec.Struct, eq=False):
    """One admitted call's reservations. Settle or release it exactly once. A Struct: made in C, in
    one call per admission, every field it does not name at its default (compared by identity, as before)."""

    _limiter: Limiter | None
    request_id: str
    created: float  # time.monotonic() at admission, for the sweeper
    headers: Sequence[tuple[bytes, bytes]] = ()  # x-ratelimit-*, to add to the answer
    # The counters settlement corrects (shared by every call of a shape), and what this call reserved on each.
    _slots: _Slots = _NO_SLOTS
    _held: Sequence[int] = ()
    gen: int = 0  # the counters' generation the reservations were made in
    deployment: str | None = None  # the deployment whose rate limit was charged
    skip: frozenset[str] = _NO_SKIP  # planned deployments over their own rate limit
    over_budget: bool = False  # a soft budget is exceeded (the call is allowed, and flagged)
    # What each failover attempt's own admission counted on a deployment admission did not charge
    # (Limiter.admit_attempt): (deployment, its requests counter, its tokens counter, the tokens reserved
    # there, the counters' generation); None: no such attempt (the usual call).
    attempted: list[tuple[str, str | None, str | None, int, int]] | None = None
    warnings: Sequence[str] = ()
    settled: bool = False

    @property
    def reserved(self) -> list[tuple[str, int]]:
        """(counter, amount reserved) of each counter settlement corrects, budgets first."""
        return list(zip(self._slots.keys, self._held))

    def settle(self, cost_nanos: int, currency: str, tokens: int) -> bool:
        """Replace the reservations with what the call actually cost and used. False if already settled."""
        if self.settled:
            return False
        self.settled = True
        limiter = self._limiter
        if limiter is not None:
            slots = self._slots
            pair = slots.pair
            if pair is not None:
                # The usual shape, as the general path below settles it, without its maps and zip.
                budget, currency_of, tokens_key = pair
                cost = cost_nanos if currency == currency_of else 0
                local = slots.local
                if local is not None:
                    # In-process counters (never emptied under a running process, so the reservations are
                    # in them): LocalCounters.adjust2 written out, without its call and the generation's lookup.
                    held = self._held
                    cost -= held[0]
                    tokens -= held[1]
                    limiter.open.pop(self.request_id, None)
                    if cost and budget in local:
                        local[budget] += cost
                    if tokens and tokens_key in local:
                        local[tokens_key] += tokens
                    return True
                counters = limiter.counters
                if self.gen == counters.generation:
                    held = self._held
                    cost -= held[0]
                    tokens -= held[1]
                limiter.open.pop(self.request_id, None)
                counters.adjust2(budget, cost, tokens_key, tokens)
                return True
            settled_to = [tokens]
            for cur in slots.currencies:
                settled_to.append(cost_nanos if cur == currency else 0)
            used: Iterable[int] = map(settled_to.__getitem__, slots.kinds)
            # Less what it reserved (zero deltas included: the counters skip them); but when the
            # counters were emptied and re-seeded since admission, the reservation is not in them,
            # and this call's usage row is not in the seed: what it used is added in full.
            if self.gen == limiter.counters.generation:
                used = map(operator.sub, used, self._held)
            limiter._finish(self, zip(slots.keys, used))
        return True

    def add_use(self, deployment: str, usage, tier: str | None = None) -> None:
        """Count another upstream answer of this call on its budgets and token limits, on top of what the
        call settles to: one the provider billed and the call did not serve (accounting/tracker.py
        `_unserved`), priced at `deployment`'s prices for service tier `tier` (usage: accounting.record.Usage). Whenever it comes,
        before or after the settlement: what it adds is used, not reserved, so no generation to compare."""
        limiter = self._limiter
        if limiter is None:
            return
        price = limiter.prices.get(deployment)
        if price is not None:
            price = price.for_tier(tier)
        cost, currency = (price.charge(usage)[1], price.currency) if price is not None else (0, "")
        slots = self._slots
        tokens = usage.prompt_tokens + usage.completion_tokens
        amounts = [tokens]
        amounts.extend(cost if cur == currency else 0 for cur in slots.currencies)
        # The caller's budgets and token limits; not the token limit of the deployment admission charged
        # (`self.deployment`): the answer came from `deployment`, and is counted on that one's own limit,
        # as a re-seed from the stored rows counts its `unserved` row (Metering.seed_rates). Its request is
        # counted with the call's other upstream calls (`walked`).
        own = f"{limiter.rules.prefix}r:deployment:"
        deltas = [(key, amounts[kind]) for key, kind in zip(slots.keys, slots.kinds) if not key.startswith(own)]
        made: dict[str, int] = {}
        _on_deployment(limiter, deployment, "t", tokens, deltas, made)
        limiter.counters.adjust(deltas, made)

    def walked(self, served: str | None, tokens: int, attempts: Iterable) -> None:
        """After `settle`, when deployments have rate limits: count on each deployment's own limits what the
        call did there beyond what admission counted on the deployment it charged (`self.deployment`; None
        when no planned deployment has a limit: a fallback group's may). `served`: the deployment that served
        (None: none did), `tokens` its tokens; `attempts`: routing's (or the record's), `.deployment` and
        `.outcome` each.

        - Requests: a deployment's requests-per-minute limit counts the upstream calls made to it (a retry, a
          failover, a hedge, a refusal failed over from, each is one): admission counted the charged one's
          first; every other call is counted here, on the counter of this minute, made if no call was
          charged on it yet (as in-process and in Redis alike). A skip or an open breaker made no call.
        - Tokens: settled onto the charged deployment's tokens-per-minute limit, they are moved onto the
          serving deployment's own, as a re-seed from the stored rows counts them (the row names the serving
          deployment: Metering.seed_rates). The charged deployment's counter holds them after `settle`,
          whatever the generation."""
        limiter = self._limiter
        if limiter is None:
            return
        charged = self.deployment
        deltas: list[tuple[str, int]] = []
        made: dict[str, int] = {}
        if served != charged and tokens:
            own = f"{limiter.rules.prefix}r:deployment:"
            deltas += [
                (key, -tokens)
                for key, kind in zip(self._slots.keys, self._slots.kinds)
                if kind == 0 and key.startswith(own)
            ]
            if served is not None:
                _on_deployment(limiter, served, "t", tokens, deltas, made)
        calls: dict[str, int] = {}
        for attempt in attempts:
            if attempt.outcome not in _NO_CALL:
                calls[attempt.deployment] = calls.get(attempt.deployment, 0) + 1
        if charged in calls:
            calls[charged] -= 1  # counted at admission (a charged deployment never called keeps it: conservative)
        if self.attempted is not None:
            # Failover attempts' own admissions (Limiter.admit_attempt): their request is counted already,
            # or given back if the attempt then made no call (cancelled first, an open breaker); their tokens'
            # reservation is given back (the tokens served are counted on the serving deployment above).
            gen_now = limiter.counters.generation
            for deployment, requests, tokens_key, reserved, gen in self.attempted:
                if calls.get(deployment):
                    calls[deployment] -= 1
                elif requests is not None and gen == gen_now:
                    deltas.append((requests, -1))
                if tokens_key is not None and reserved and gen == gen_now:
                    deltas.append((tokens_key, -reserved))
        for deployment, n in calls.items():
            _on_deployment(limiter, deployment, "r", n, deltas, made)
        if deltas:
            limiter.counters.adjust(deltas, made)

    def release(self) -> bool:
        """The call was never answered (or never reached a provider): give everything back."""
        return self.settle(0, "", 0)


# Attempts that made no upstream call: a planner's skip, an open breaker, a context window too small, the
# marker of a fallback group or of a spent time budget (routing/attempts.py, routing/router.py).
_NO_CALL = frozenset({"skipped", "breaker_open", "skipped_window_too_small", "fallback_group", "budget_exhausted"})


def _on_deployment(
    limiter: Limiter, deployment: str, kind: str, n: int, deltas: list[tuple[str, int]], made: dict[str, int]
) -> None:
    """Add `n` requests (`kind` "r") or tokens ("t") on `deployment`'s own counter of this minute to
    `deltas`, if it has that limit, and name the counter in `made` (key -> expire_at_ms): it is made if no
    call was charged on that deployment this minute yet, as a re-seed from the stored rows would hold it."""
    spec = limiter.rules.for_deployment(deployment)
    if spec is None or not n or (spec.tpm if kind == "t" else spec.rpm) is None:
        return
    wid = int(limiter.clock() * 1000) // WINDOW_MS
    key = window_key(spec, kind, wid)
    made[key] = window_expire_ms(wid)
    deltas.append((key, n))


# The ticket of every admission while no budget or rate limit is configured: it reserved nothing, is
# never in `open` (so never settled) and adds no header; one for all such calls, made once.
_UNLIMITED_TICKET = Ticket(None, "", 0.0, _NO_HEADERS)


class _Route:
    """What admission needs from one planned deployment list, worked out once per list."""

    __slots__ = ("deployments", "also", "worst", "out_cap", "dep_specs")

    def __init__(
        self, deployments, prices: PriceTable, rules: Rules, default_out: int, tier: str | None = None, also=()
    ) -> None:
        self.deployments = tuple(deployments)  # kept alive: the shape cache is keyed by their ids
        self.also = also  # (likewise)
        # Worst case per currency: the dearest input and output prices among the planned deployments and
        # those the call may fall back to (`also`: its fallback groups'), at the service tier the call asked
        # for (`price.tiers`): it is charged at that tier's price.
        worst: dict[str, tuple[int, int]] = {}
        for dep in (*deployments, *also):
            price = prices.get(dep.name)
            if price is not None:
                price = price.for_tier(tier)
                i, o = worst.get(price.currency, (0, 0))
                worst[price.currency] = (max(i, price.in_micro), max(o, price.out_micro))
        self.worst = worst
        # When the request names no max_tokens: the most any planned deployment may write, a
        # deployment that declares no max_output_tokens counting as default_out.
        self.out_cap = max((d.max_output_tokens or default_out for d in (*deployments, *also)), default=default_out)
        # Per-deployment rate specs in plan order, cut after the first unlimited deployment (it always
        # fits, so nothing after it can be charged); empty when no planned deployment has a limit.
        specs = [rules.for_deployment(d.name) for d in deployments]
        if any(spec is not None for spec in specs):
            cut = next((i for i, spec in enumerate(specs) if spec is None), len(specs) - 1)
            specs = specs[: cut + 1]
        else:
            specs = []
        self.dep_specs = specs


class _Shape:
    """One caller's rules on one planned route in one minute: the counter keys of the current minute
    and day, their limits, what each one is incremented by and the x-ratelimit-* header names, all
    worked out once, so that each admission only does its own arithmetic."""

    __slots__ = (
        "owner",
        "wid",
        "out_cap",
        "prices",
        "budgets",
        "rates",
        "groups",
        "meta",
        "group_meta",
        "rate_expire_ms",
        "flat",
        "keys",
        "limits",
        "incr_idx",
        "expiring",
        "slots",
        "held_idx",
        "held",
        "rows",
        "admit",
        "soft",
        "wend",
        "fixed",
        "usual",
    )

    def __init__(self, budgets, rates, route: _Route, wid: int, periods: dict) -> None:
        self.owner = (budgets, rates, route)  # what the cache key's ids are of, kept alive
        self.wid = wid  # a new minute also starts every new day, period bucket included
        self.out_cap = route.out_cap
        currencies = list(route.worst)
        # (in, out) micro-units per 1M tokens of each currency's worst case; none needed without budgets
        self.prices = list(route.worst.values()) if budgets else []
        self.rate_expire_ms = rate_expire = window_expire_ms(wid)
        self.wend = (wid + 1) * WINDOW_MS  # when the minute ends: the x-ratelimit-reset-* values count down to it
        # (key, limit, hard, currency, expire_at_ms) per budget
        self.budgets = [
            (b.base + periods[b.period].bucket, b.limit_nanos, b.hard, b.currency, periods[b.period].expire_ms)
            for b in budgets
        ]
        # (key, limit, counts tokens) per rate counter, and ("requests"|"tokens", limit) per counter
        self.rates: list[tuple[str, int, bool]] = []
        self.meta: list[tuple[str, int]] = []
        for r in rates:
            _counters(r, wid, self.rates, self.meta)
        self.groups: list[list[tuple[str, int, bool]]] = []
        self.group_meta: list[list[tuple[str, int]]] = []
        for spec in route.dep_specs:
            counters: list[tuple[str, int, bool]] = []
            gm: list[tuple[str, int]] = []
            if spec is not None:
                _counters(spec, wid, counters, gm)
            self.groups.append(counters)
            self.group_meta.append(gm)
        # Every counter, budgets then rates, as parallel lists for LocalCounters.admit_flat (without
        # deployment alternatives); its increment is picked from the admission's values (_ZERO...).
        self.flat = not route.dep_specs
        self.keys = [key for key, *_ in self.budgets] + [key for key, _, _ in self.rates]
        self.limits: list[float] = [limit if hard else _UNLIMITED for _, limit, hard, _, _ in self.budgets]
        self.limits += [limit for _, limit, _ in self.rates]
        self.incr_idx = [
            _RESERVE + currencies.index(cur) if cur in route.worst else _ZERO for _, _, _, cur, _ in self.budgets
        ]
        self.incr_idx += [_EST if tokens else _ONE for _, _, tokens in self.rates]
        self.expiring = [(key, expire) for key, _, _, _, expire in self.budgets if expire]
        self.expiring += [(key, rate_expire) for key, _, _ in self.rates]
        # What settlement corrects (Ticket._slots), and where each one's reservation is picked from.
        self.slots = slots = _Slots()
        for key, _, _, cur, expire in self.budgets:
            slots.add(key, cur, expire)
        held = self.incr_idx[: len(self.budgets)]
        for key, _, tokens in self.rates:
            if tokens:
                slots.add(key, None, rate_expire)
                held.append(_EST)
        self.held_idx = held
        self.held = _picker(held)  # values -> what this call reserved on each slot, as a tuple
        # (key, limit, index of its increment in the admission's values) per counter, for admit_flat
        self.rows = [*zip(self.keys, self.limits, self.incr_idx)]
        self.admit: FlatAdmit | None = None  # flat shapes on in-process counters: LocalCounters.flat
        self.usual: UsualAdmit | None = None  # the usual shape on in-process counters: _usual_admission
        # Soft budgets: (index, limit, spec), for the warning when one is exceeded.
        self.soft = [(i, b.limit_nanos, b) for i, b in enumerate(budgets) if not b.hard]
        # Without deployment limits and with at most one counter of each kind (the usual shape), the
        # x-ratelimit-* headers need no search for the most constrained counter: their names and limits
        # are fixed here, and each admission only fills in what remains (see `_fixed_headers`).
        kinds = [kind for kind, _ in self.meta]
        self.fixed: Callable[[list[int], bytes], list[tuple[bytes, bytes]]] | None = None
        if self.meta and not route.dep_specs and len(set(kinds)) == len(kinds):
            nb = len(self.budgets)
            order = sorted(range(len(kinds)), key=lambda i: _KIND_ORDER[kinds[i]])
            self.fixed = _fixed_headers([(nb + i, *self.meta[i]) for i in order])

    def plan(self, incrs: list[int], est_tokens: int) -> Plan:
        """The admission as a `Plan` (Redis, deployment alternatives, or to say why it was refused)."""
        nb = len(self.budgets)
        return Plan(
            [(key, limit, incr, hard, expire) for (key, limit, hard, _, expire), incr in zip(self.budgets, incrs)],
            [(key, limit, incr) for (key, limit, _), incr in zip(self.rates, incrs[nb:])],
            [[(key, limit, est_tokens if tokens else 1) for key, limit, tokens in g] for g in self.groups],
            self.rate_expire_ms,
        )


def _counters(spec, wid: int, out: list, meta: list) -> None:
    if spec.rpm is not None:
        out.append((window_key(spec, "r", wid), spec.rpm, False))
        meta.append(("requests", spec.rpm))
    if spec.tpm is not None:
        out.append((window_key(spec, "t", wid), spec.tpm, True))
        meta.append(("tokens", spec.tpm))


def _limits_unavailable() -> ApiError:
    """The answer when shared counters cannot be reached and limits fail closed (`fail_open: false`)."""
    return ApiError(
        503,
        "Budgets and rate limits cannot be checked right now; retry shortly.",
        type="server_error",
        code="limits_unavailable",
        headers={"retry-after": "1"},
    )


class Limiter:
    def __init__(
        self,
        cfg: MeteringConfig,
        prices: PriceTable,
        counters: RedisCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from .counters import LocalCounters

        self.cfg = cfg
        self.prices = prices
        self.rules = Rules(cfg)
        self.counters: LocalCounters | RedisCounters = counters if counters is not None else LocalCounters()
        self.clock = clock
        self.periods = Periods()
        self.open: dict[str, Ticket] = {}
        # Shared counters: the admission `at_once` planned and the leases could not cover, (request id, shape,
        # ms, ticket, plan): `admit` of that call, next in the same loop step, counts it through Redis.
        self._missed: tuple[str, _Shape, int, Ticket, Plan] | None = None
        # Set by Metering: its writer's backlog is full, or its usage spool cannot take new calls' rows.
        self.overloaded: Callable[[], bool] | None = None
        self.spool_refusing: Callable[[], bool] | None = None  # set by Metering: which of the two
        # Set by Metering: seeds the counters of the current period and rate window from stored usage.
        self.reseed_from_usage: Callable[[], Awaitable[None]] | None = None
        self._sweeper: asyncio.Task | None = None
        self._factor, self._extra = cfg.prompt_reserve.factor, cfg.prompt_reserve.extra_tokens
        self._routes: dict[tuple, _Route] = {}
        self._shapes: dict[tuple, _Shape] = {}  # by (tenant, team, key, *ids of the deployments)
        self._reset_ms, self._reset = -1, b""  # the last x-ratelimit-reset-* value, and its ms
        self._pruned_wid = -1  # the minute in-process counters were last pruned of expired keys in
        # In-process counters with a store: the cap on team and key budget counters (budget_bound.py), and
        # what reads a dropped one's spend back (set by Metering: (spec, its period) and tenant of each).
        self.bound = BudgetBound(cfg.key_prefix)
        self.seed_missing: Callable[[list[tuple[BudgetSpec, Period]], str], Awaitable[None]] | None = None
        self._unseeded: tuple[str, list[tuple[BudgetSpec, Period]], str] | None = None  # (request id, what, tenant)

    # -- the hot path ------------------------------------------------------------------------------
    def _overload_error(self) -> ApiError:
        if self.spool_refusing is not None and self.spool_refusing():
            return ApiError(
                503,
                "The gateway cannot store usage records on its local disk right now (usage spool); retry shortly.",
                type="server_error",
                code="usage_spool_unavailable",
                headers={"retry-after": "1"},
            )
        return ApiError(
            503,
            "The gateway cannot record usage fast enough right now; retry shortly.",
            type="server_error",
            code="usage_backlog",
            headers={"retry-after": "1"},
        )

    async def admit(
        self,
        principal: Principal,
        model_group: str,
        deployments: list,
        prompt_tokens: int,
        max_output_tokens: int | None,
        request_id: str,
        choices: int = 1,
        tier: str | None = None,
        also: tuple = (),
    ) -> Ticket:
        """`max_output_tokens` caps one choice (None: the client set no cap); `choices` is how many
        the call generates (chat's `n`), so the reservation covers choices x the cap; `tier` the
        `service_tier` the call asked for (None: none), whose prices the reservation is made at; `also`
        the deployments the call may fall back to besides (its fallback groups'), whose prices and output
        caps the reservation covers too (no deployment limit of theirs is charged at admission)."""
        missed = self._missed
        unseeded = self._unseeded
        asked = (missed is not None and missed[0] == request_id) or (unseeded is not None and unseeded[0] == request_id)
        if not asked:  # (at_once was not just asked about this call)
            ticket = self.at_once(
                principal, model_group, deployments, prompt_tokens, max_output_tokens, request_id, choices, tier, also
            )
            if ticket is not None:
                return ticket
        for _ in range(3):
            unseeded = self._unseeded
            if unseeded is None or unseeded[0] != request_id:
                break
            # In-process counters, a dropped one of this caller's: the store reads its spend back first.
            self._unseeded = None
            await self._seed(unseeded[1], unseeded[2])
            ticket = self.at_once(
                principal, model_group, deployments, prompt_tokens, max_output_tokens, request_id, choices, tier, also
            )
            if ticket is not None:
                return ticket
        else:
            self._unseeded = None
            raise _limits_unavailable()  # dropped again each time it was read back (never seen)
        missed = self._missed
        assert missed is not None and missed[0] == request_id  # at_once answers None having planned the call
        # Shared counters (Redis): the admission at_once planned, its counting awaited.
        self._missed = None
        _, shape, now_ms, ticket, plan = missed
        outcome = await self._run(plan, now_ms, ticket)
        if outcome is None:
            return ticket  # Redis unreachable and fail_open: admitted without limits
        return self._conclude(ticket, plan, outcome, shape, deployments, now_ms)

    def at_once(
        self,
        principal: Principal,
        model_group: str,
        deployments: list,
        prompt_tokens: int,
        max_output_tokens: int | None,
        request_id: str,
        choices: int = 1,
        tier: str | None = None,
        also: tuple = (),
    ) -> Ticket | None:
        """`admit`'s answer when it needs no await (in-process counters answer at once, and a refusal
        raises; shared ones when this process's leases cover the call), else None: a round trip to Redis,
        or a read of the store for a caller whose in-process budget counter was dropped, for `admit`. The
        hot path asks this first, so such an admission costs no coroutine."""
        overloaded = self.overloaded
        if overloaded is not None and overloaded():
            raise self._overload_error()
        if not self.rules.any:
            return _UNLIMITED_TICKET
        counters = self.counters
        if counters.shared:
            # From this process's leases when they cover the call: through `admit`'s four coroutines such an
            # admission took ~7 us more of the loop (bench/RESULTS.md). A miss is kept for `admit` to go on from.
            now = self.clock()
            now_ms = int(now * 1000)
            leased = self._shape_at(principal, deployments, now, now_ms, tier, also)
            usual = leased.usual
            if usual is not None:  # the usual shape from the leases, written out (_usual_leased)
                ticket = usual(request_id, prompt_tokens, max_output_tokens, choices, now_ms)
                if ticket is not None:
                    return ticket
            values = self._values(leased, prompt_tokens, max_output_tokens, choices)
            planned, plan = self._planned(leased, values, request_id)
            outcome = counters.admit_now(plan, now_ms)
            if outcome is None:
                self._missed = (request_id, leased, now_ms, planned, plan)  # what `admit` goes on from
                return None
            return self._conclude(planned, plan, outcome, leased, deployments, now_ms)
        now = self.clock()
        now_ms = int(now * 1000)
        # _shape_at, written out (a call less on every admission)
        key: tuple
        if len(deployments) == 1:
            key = (principal.tenant, principal.team, principal.key_id or principal.subject, id(deployments[0]))
        else:
            key = (principal.tenant, principal.team, principal.key_id or principal.subject, *map(id, deployments))
        if tier is not None:  # a shape of its own: reserved at that tier's prices
            key = (*key, tier)
        if also:  # likewise: reserved at the fallback groups' prices too
            key = (*key, id(also))
        shape = self._shapes.get(key)
        if shape is None or shape.wid != now_ms // WINDOW_MS:
            if self.seed_missing is not None and self._dropped_for(principal, now, now_ms, request_id):
                return None  # `admit` has the store read the caller's dropped counters back
            shape = self._shape(key, principal, deployments, now_ms // WINDOW_MS, now, tier, also)
        usual = shape.usual
        if usual is not None:
            ticket = usual(request_id, prompt_tokens, max_output_tokens, choices, now_ms)
            if ticket is not None:
                return ticket
            # refused, having counted nothing: the general path below says why
        values = self._values(shape, prompt_tokens, max_output_tokens, choices)
        if shape.flat:  # no deployment alternatives: the common case, one row per counter
            assert shape.admit is not None  # made with the shape for in-process counters
            after = shape.admit(values, now_ms)
            if after is not None:
                fixed = shape.fixed
                if fixed is not None:  # the usual shape: one counter of each kind
                    ms = shape.wend - now_ms
                    if ms != self._reset_ms:  # calls a millisecond apart share their reset value
                        self._reset_ms, self._reset = ms, window_reset(ms)
                    headers = fixed(after, self._reset)
                else:
                    headers = self._rate_headers(shape, shape.meta, after, now_ms) if shape.meta else _NO_HEADERS
                ticket = Ticket(self, request_id, _monotonic(), headers, shape.slots, shape.held(values))
                if shape.soft:
                    self._warn(ticket, shape, after)
                self.open[request_id] = ticket
                return ticket
        ticket, plan = self._planned(shape, values, request_id)
        return self._conclude(ticket, plan, counters.admit(plan, now_ms), shape, deployments, now_ms)

    def _dropped_for(self, principal: Principal, now: float, now_ms: int, request_id: str) -> bool:
        """In-process counters with a store, before making a caller's shape: bound the budget counters
        (budget_bound.py), then whether one of this caller's was dropped (True: kept in `_unseeded` for
        `admit`, which reads it back from the store)."""
        bound = self.bound
        wid = now_ms // WINDOW_MS
        counters = self.counters
        assert not counters.shared  # (seed_missing is set for in-process counters only)
        values, expiries = counters.tables()
        if wid != bound.wid and wid != self._pruned_wid:
            # Expired counters go first (as _shape would): what is left under the cap is counted without them.
            self._pruned_wid = wid
            counters.prune(now_ms)
        if bound.due(len(values), wid):
            held = [k for ticket in self.open.values() for k in ticket._slots.keys]
            dropped = bound.drop_idle(values, expiries, held)
            if dropped:
                self._shapes = {}  # a shape may name a dropped counter: each caller's next call makes its own
                log.info("dropped %d idle team and key budget counters (past %d kept)", dropped, bound.cap)
        if not bound.dropped:
            return False
        missing = bound.missing(self.rules.for_principal(principal)[0], self.periods.at(now), values)
        if not missing:
            return False
        self._unseeded = (request_id, missing, principal.tenant)
        return True

    async def read_back(self, budgets: Sequence[BudgetSpec], tenant: str) -> None:
        """Before a read of `tenant`'s budget counters that is no caller's admission (the admin API's budget
        status): those of its teams and keys a drop left out are read back from the store first, as an
        admission has them read (budget_bound.py); else they read as nothing spent."""
        if self.seed_missing is None:
            return  # nothing is ever dropped
        counters = self.counters
        assert not counters.shared  # (seed_missing is set for in-process counters only)
        values, _ = counters.tables()
        missing = self.bound.missing(budgets, self.periods.at(self.clock()), values)
        if missing:
            await self._seed(missing, tenant)

    async def _seed(self, missing: list[tuple[BudgetSpec, Period]], tenant: str) -> None:
        assert self.seed_missing is not None  # set whenever a counter can be dropped
        try:
            await self.seed_missing(missing, tenant)
        except Exception as exc:  # the database unreachable: the spend cannot be known, so no admission
            log.warning("budget counters not read back from the store (%s): call refused", type(exc).__name__)
            raise _limits_unavailable() from None

    async def admit_attempt(
        self,
        ticket: Ticket,
        deployment: str,
        prompt_tokens: int,
        max_output_tokens: int | None,
        choices: int,
        cap: int,
        tokens: bool = True,
    ) -> ApiError | None:
        """A failover attempt's own admission on `deployment`, one admission did not charge (docs/metering.md
        "Deployment limits"): one request, and the call's tokens (the prompt estimate plus `max_output_tokens`,
        else `cap`: that deployment's own output cap, x `choices`), on its requests- and tokens-per-minute
        counters of this minute, if it has them. None: counted (on `ticket`, for `Ticket.walked` to settle),
        or nothing to count; else the 429 of a deployment at its limit (nothing counted). Only a call that
        fails over pays it: the first attempt was admitted with the call. `tokens` False: a retry, one
        request only (the call's tokens were reserved with its first attempt there)."""
        spec = self.rules.for_deployment(deployment)
        if spec is None or ticket._limiter is None:  # no limit there, or a ticket admitted without limits
            return None
        out = max_output_tokens if max_output_tokens is not None else cap
        if choices > 1:
            out *= choices
        est = prompt_tokens + min(out, _MAX_OUT_TOKENS)
        now_ms = int(self.clock() * 1000)
        wid = now_ms // WINDOW_MS
        rates: list[tuple[str, int, int]] = []
        meta: list[tuple[str, int]] = []
        requests_key = tokens_key = None
        if spec.rpm is not None:
            requests_key = window_key(spec, "r", wid)
            rates.append((requests_key, spec.rpm, 1))
            meta.append(("requests", spec.rpm))
        if spec.tpm is not None and tokens:
            tokens_key = window_key(spec, "t", wid)
            rates.append((tokens_key, spec.tpm, est))
            meta.append(("tokens", spec.tpm))
        if not rates:
            return None
        plan = Plan([], rates, [], window_expire_ms(wid))
        counters = self.counters
        if not counters.shared:
            outcome = counters.admit(plan, now_ms)
        else:
            try:
                outcome = await counters.admit(plan, now_ms)
            except Exception as exc:  # as `_run`: Redis unreachable
                if not self.cfg.fail_open:
                    raise _limits_unavailable() from None
                log.warning(
                    "limits not enforced for %s on %s: counters unreachable (%s)",
                    ticket.request_id,
                    deployment,
                    type(exc).__name__,
                )
                return None
        if outcome.code == OK:
            if ticket.attempted is None:
                ticket.attempted = []
            ticket.attempted.append((deployment, requests_key, tokens_key, est if tokens_key else 0, outcome.gen))
            return None
        wait_ms = (wid + 1) * WINDOW_MS - now_ms
        kind, limit = meta[outcome.index]
        used = outcome.values[0]
        per_min = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        return ApiError(
            429,
            f"Rate limit reached for deployment {deployment} on {per_min}: Limit {limit}, Used {used}, "
            f"Requested {rates[outcome.index][2]}. Please try again in {go_duration(wait_ms)}.",
            type=kind,
            code="rate_limit_exceeded",
            headers={
                "retry-after": str(math.ceil(wait_ms / 1000)),
                "retry-after-ms": str(wait_ms),
                f"x-ratelimit-limit-{kind}": str(limit),
                f"x-ratelimit-remaining-{kind}": str(max(0, limit - used)),
                f"x-ratelimit-reset-{kind}": go_duration(wait_ms),
            },
        )

    def _shape_at(
        self, principal: Principal, deployments: list, now: float, now_ms: int, tier: str | None = None, also=()
    ) -> _Shape:
        """The caller's shape on this route (at service tier `tier`'s prices) in the minute of `now_ms`."""
        wid = now_ms // WINDOW_MS
        # Keyed by who calls as Rules.for_principal resolves callers (tenant, team, key) and by the planned
        # deployments' ids: the rules are asked only when a shape is made (new rules drop every shape).
        key: tuple
        if len(deployments) == 1:  # the usual plan: no map made and freed (~1,000 instructions)
            key = (principal.tenant, principal.team, principal.key_id or principal.subject, id(deployments[0]))
        else:
            key = (principal.tenant, principal.team, principal.key_id or principal.subject, *map(id, deployments))
        if tier is not None:
            key = (*key, tier)
        if also:
            key = (*key, id(also))
        shape = self._shapes.get(key)
        if shape is None or shape.wid != wid:
            shape = self._shape(key, principal, deployments, wid, now, tier, also)
        return shape

    def _values(self, shape: _Shape, prompt_tokens: int, max_output_tokens: int | None, choices: int) -> list[int]:
        """What a counter of `shape` may be incremented by: [0, 1, estimated tokens, the reservation in
        each currency] (see _ZERO...)."""
        out_tokens = max_output_tokens if max_output_tokens is not None else shape.out_cap
        if choices > 1:
            out_tokens *= choices
        if out_tokens > _MAX_OUT_TOKENS:
            out_tokens = _MAX_OUT_TOKENS
        prices = shape.prices
        if not prices:
            return [0, 1, prompt_tokens + out_tokens]
        tokens_in = _ceil(prompt_tokens * self._factor) + self._extra  # the prompt reserve (config)
        if len(prices) == 1:  # one currency, the usual case: reserve_nanos written out (no call)
            ((i, o),) = prices
            return [0, 1, prompt_tokens + out_tokens, -(-(tokens_in * i + out_tokens * o) // 1000)]
        values = [0, 1, prompt_tokens + out_tokens]
        for i, o in prices:
            values.append(reserve_nanos(tokens_in, i, out_tokens, o))
        return values

    def _planned(self, shape: _Shape, values: list[int], request_id: str) -> tuple[Ticket, Plan]:
        """The ticket and the `Plan` of an admission that goes through one: Redis, deployment
        alternatives, or a refusal to explain."""
        ticket = Ticket(self, request_id, _monotonic(), _NO_HEADERS, shape.slots, shape.held(values))
        return ticket, shape.plan([*map(values.__getitem__, shape.incr_idx)], values[_EST])

    def _conclude(
        self, ticket: Ticket, plan: Plan, outcome: Outcome, shape: _Shape, deployments, now_ms: int
    ) -> Ticket:
        """The ticket of a planned admission the counters answered (raises the 429 of a refusal)."""
        meta = shape.meta
        budgets, rates, _ = shape.owner
        if outcome.code != OK:
            wend = (shape.wid + 1) * WINDOW_MS
            raise self._refusal(outcome, plan, budgets, rates, deployments, meta, now_ms, wend)
        ticket.gen = outcome.gen
        if outcome.index >= 0 and plan.groups:
            group_meta = shape.group_meta[outcome.index]
            ticket.deployment = deployments[outcome.index].name
            ticket.skip = frozenset(d.name for d in deployments[: outcome.index])
            slots, held = ticket._slots.copy(), list(ticket._held)
            for (key, _, incr), (kind, _) in zip(plan.groups[outcome.index], group_meta):
                if kind == "tokens":
                    slots.add(key, None, shape.rate_expire_ms)
                    held.append(incr)
            ticket._slots, ticket._held = slots, held
            meta = meta + group_meta
        if meta:
            ticket.headers = self._rate_headers(shape, meta, outcome.values, now_ms)
        if shape.soft:
            self._warn(ticket, shape, outcome.values)
        self.open[ticket.request_id] = ticket
        return ticket

    def _rate_headers(self, shape: _Shape, meta, values: list[int], now_ms: int) -> list[tuple[bytes, bytes]]:
        """The x-ratelimit-* headers from the counters' values after admission (budgets first)."""
        ms = shape.wend - now_ms
        if ms != self._reset_ms:  # calls a millisecond apart share their reset value
            self._reset_ms, self._reset = ms, window_reset(ms)
        fixed = shape.fixed
        if fixed is None or meta is not shape.meta:  # several counters of a kind, or a deployment's too
            return _headers(meta, values[len(shape.budgets) :], self._reset)
        return fixed(values, self._reset)

    def _warn(self, ticket: Ticket, shape: _Shape, values: list[int]) -> None:
        """Flag the call and warn in a header when it takes a soft budget past its amount."""
        warnings = [f"{b.describe()} is exceeded" for i, limit, b in shape.soft if values[i] > limit]
        if warnings:
            ticket.over_budget, ticket.warnings = True, warnings
            warning = header_text.text("; ".join(warnings)).encode()
            ticket.headers = [*ticket.headers, (b"x-multihome-budget-warning", warning)]

    def reconfigure(self, cfg: MeteringConfig, prices: PriceTable) -> None:
        """A reloaded config: its prompt reserve, default output cap and prices apply from the next
        admission (the routes and shapes made from the old ones are dropped)."""
        self.cfg, self.prices = cfg, prices
        self._factor, self._extra = cfg.prompt_reserve.factor, cfg.prompt_reserve.extra_tokens
        self._routes = {}
        self._shapes = {}

    def use_rules(self, rules: Rules) -> None:
        """Switch to new rules (budgets changed): admissions from now on resolve against them.
        Tickets already admitted keep their reservations and settle them as before."""
        self.rules = rules
        self._routes = {}  # built from the old rules
        self._shapes = {}

    def _route(self, deployments, tier: str | None = None, also=()) -> _Route:
        key = (*map(id, deployments), tier)  # the route keeps the deployments alive, so their ids stay theirs
        if also:
            key = (*key, id(also))
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) > 10_000:  # bounded: plans (and tiers) come from config, not from request bodies
                self._routes.clear()
            route = self._routes[key] = _Route(
                deployments, self.prices, self.rules, self.cfg.default_max_output_tokens, tier, also
            )
        return route

    def _shape(
        self, key: tuple, principal: Principal, deployments, wid: int, now: float, tier: str | None = None, also=()
    ) -> _Shape:
        """A new shape for (caller, route at service tier `tier`), or one of a new minute; cached by `key`
        (the shape keeps the deployments alive through its route, so their ids stay theirs)."""
        budgets, rates = self.rules.for_principal(principal)
        if key not in self._shapes and len(self._shapes) > 10_000:  # bounded: callers x routes
            self._shapes.clear()
        route = self._route(deployments, tier, also)
        shape = self._shapes[key] = _Shape(budgets, rates, route, wid, self.periods.at(now))
        counters = self.counters
        if not counters.shared:
            shape.slots.local = counters.tables()[0]
        if counters.shared:
            if shape.flat:
                shape.usual = _usual_leased(self, shape, counters)
        elif shape.flat:
            shape.admit = counters.flat(shape.rows, shape.expiring)
            shape.usual = _usual_admission(self, shape, counters)
            if shape.usual is not None and wid != self._pruned_wid:
                # The usual admission counts no admissions to prune by (LocalCounters.flat does), so expired
                # keys go here: a new minute makes new shapes, and only shapes make a flat admission's keys.
                self._pruned_wid = wid
                counters.prune(int(now * 1000))
        return shape

    async def _run(self, plan: Plan, now_ms: int, ticket: Ticket) -> Outcome | None:
        if not self.counters.shared:
            return self.counters.admit(plan, now_ms)
        try:
            return await self.counters.admit(plan, now_ms)
        except Exception as exc:  # redis errors, timeouts, connection refused
            if not self.cfg.fail_open:
                raise _limits_unavailable() from None
            log.warning("limits not enforced for %s: counters unreachable (%s)", ticket.request_id, type(exc).__name__)
            ticket._slots, ticket._held = _NO_SLOTS, ()
            ticket.headers = [(b"x-multihome-limits", b"unavailable")]
            return None

    def _refusal(self, outcome: Outcome, plan: Plan, budgets, rates, deployments, meta, now_ms, wend) -> ApiError:
        if outcome.code == BUDGET:
            b: BudgetSpec = budgets[outcome.index]
            per = self.periods.get(b.period, now_ms / 1000)
            used = outcome.values[0] / 1e9
            want = plan.budgets[outcome.index][2] / 1e9
            when = f" It resets at {per.end:%Y-%m-%dT%H:%M:%SZ}." if per.end is not None else ""
            headers = {}
            if per.end is not None:
                wait_ms = per.end_ms - now_ms
                headers = {"retry-after": str(math.ceil(wait_ms / 1000)), "retry-after-ms": str(wait_ms)}
            return ApiError(
                429,
                f"Budget exceeded: {b.describe()} is used up ({used:.6f} {b.currency} spent or reserved by calls in "
                f"flight; this call could cost up to {want:.6f} {b.currency}).{when} Ask your tenant admin to raise the budget.",
                type="insufficient_quota",
                code="budget_exceeded",
                headers=no_retry(headers),  # spent stays spent: nothing frees it within a retry's wait
            )
        wait_ms = wend - now_ms
        headers = {"retry-after": str(math.ceil(wait_ms / 1000)), "retry-after-ms": str(wait_ms)}
        if outcome.code == DEPLOYMENT:
            names = ", ".join(d.name for d in deployments[: len(plan.groups)])
            return ApiError(
                429,
                f"Rate limit reached on every deployment that could serve this call ({names}). "
                f"Please try again in {go_duration(wait_ms)}.",
                type="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        key, limit, incr = plan.rates[outcome.index]
        kind = meta[outcome.index][0]
        r = next(r for r in rates if key.startswith(r.base + ":"))
        per_min = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        headers |= {
            f"x-ratelimit-limit-{kind}": str(limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, limit - outcome.values[0])),
            f"x-ratelimit-reset-{kind}": go_duration(wait_ms),
        }
        return ApiError(
            429,
            f"Rate limit reached for {r.scope} {r.id} on {per_min}: Limit {limit}, Used {outcome.values[0]}, "
            f"Requested {incr}. Please try again in {go_duration(wait_ms)}.",
            type=kind,
            code="rate_limit_exceeded",
            headers=headers,
        )

    # -- settlement --------------------------------------------------------------------------------
    def settle(self, request_id: str, cost_nanos: int, currency: str, tokens: int) -> Ticket | None:
        ticket = self.open.get(request_id)
        if ticket is not None:
            ticket.settle(cost_nanos, currency, tokens)
        return ticket

    def release(self, request_id: str) -> None:
        ticket = self.open.get(request_id)
        if ticket is not None:
            ticket.release()

    def _finish(self, ticket: Ticket, deltas: Iterable[tuple[str, int]]) -> None:
        self.open.pop(ticket.request_id, None)
        self.counters.adjust(deltas)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.counters.start()
        if self.counters.shared:
            self.counters.reseed = self._reseed
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _reseed(self) -> None:
        """Redis came back empty: seed the counters from stored usage (Metering's part), then create
        the counters of calls still in flight at 0, so their settlements (their whole cost) land."""
        if self.reseed_from_usage is not None:
            await self.reseed_from_usage()
        items = [
            (key, 0, expire)
            for ticket in list(self.open.values())
            for key, expire in zip(ticket._slots.keys, ticket._slots.expires)
        ]
        await self.counters.seed(items)

    async def close(self) -> None:
        await cancel_and_wait(self._sweeper)
        await self.counters.close()

    async def _sweep(self) -> None:
        interval = max(0.05, min(30.0, self.cfg.ticket_ttl_s / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> int:
        """Release tickets nobody settled within ticket_ttl_s (a front door lost track of a call)."""
        cutoff = time.monotonic() - self.cfg.ticket_ttl_s
        stale = [t for t in self.open.values() if t.created < cutoff]
        for ticket in stale:
            log.warning("releasing reservation of %s: never settled", ticket.request_id)
            ticket.release()
        return len(stale)

    async def drain(self) -> None:
        """Wait for settlements in flight to reach the counters (tests, shutdown)."""
        await self.counters.drain()


_HEADER_NAMES = {
    kind: (
        f"x-ratelimit-limit-{kind}".encode(),
        f"x-ratelimit-remaining-{kind}".encode(),
        f"x-ratelimit-reset-{kind}".encode(),
    )
    for kind in ("requests", "tokens")
}


_KIND_ORDER = {"requests": 0, "tokens": 1}


def _picker(indexes: list[int]) -> Callable[[list[int]], tuple[int, ...]]:
    """A function of an admission's values -> the values at `indexes`, as a tuple: one C call (an
    itemgetter) where a map and a list cost ~2,500 instructions a call under callgrind."""
    if len(indexes) >= 2:
        return operator.itemgetter(*indexes)
    if indexes:
        (i,) = indexes
        return lambda values: (values[i],)
    return lambda values: ()


def _fixed_headers(counters: list[tuple[int, str, int]]) -> Callable[[list[int], bytes], list[tuple[bytes, bytes]]]:
    """The x-ratelimit-* headers of a shape with at most one counter of each kind: (index of the counter
    in the admission's values, kind, limit) in header order. Names and limit headers are made here, once
    per shape; the function returned fills in what remains and the reset per call (one or two kinds
    written out: a loop over them cost twice the opcodes, and this runs on every admission)."""
    rows = _header_rows(counters)
    if len(rows) == 1:
        ((i1, head1, rem1, res1, lim1),) = rows

        def one(values: list[int], reset: bytes) -> list[tuple[bytes, bytes]]:
            u1 = values[i1]
            return [head1, (rem1, b"%d" % (lim1 - u1) if u1 < lim1 else b"0"), (res1, reset)]

        return one
    (i1, head1, rem1, res1, lim1), (i2, head2, rem2, res2, lim2) = rows  # requests, then tokens

    def two(values: list[int], reset: bytes) -> list[tuple[bytes, bytes]]:
        u1, u2 = values[i1], values[i2]
        return [
            head1,
            (rem1, b"%d" % (lim1 - u1) if u1 < lim1 else b"0"),
            (res1, reset),
            head2,
            (rem2, b"%d" % (lim2 - u2) if u2 < lim2 else b"0"),
            (res2, reset),
        ]

    return two


def _header_rows(counters: list[tuple[int, str, int]]) -> list[tuple[int, tuple[bytes, bytes], bytes, bytes, int]]:
    """Per (index, kind, limit): (index, its limit header, the remaining and reset headers' names, limit)."""
    rows = []
    for i, kind, limit in counters:
        limit_name, remaining_name, reset_name = _HEADER_NAMES[kind]
        rows.append((i, (limit_name, b"%d" % limit), remaining_name, reset_name, limit))
    return rows


def _usual_admission(limiter: Limiter, shape: _Shape, counters: LocalCounters) -> UsualAdmit | None:
    """The whole admission of the usual shape on in-process counters as one function made once per shape:
    one hard budget in the route's one currency, one requests- and one tokens-per-minute counter, no
    deployment limits. None for any other shape (at_once's general path admits it).

    It does what at_once's flat path does for this shape (the values, LocalCounters.flat's check-all-then-
    apply-all, the fixed headers, the ticket), written out: one function instead of four, and no values list,
    after list or returned tuples. Natively the cost of this path is mostly cache misses (its code and data
    are cold again by the next call), so fewer functions and objects matter more than their opcodes.
    None (nothing counted) when a counter would pass its limit: the general path then says why."""
    if (
        shape.soft
        or shape.fixed is None
        or shape.incr_idx != [_RESERVE, _ONE, _EST]
        or len(shape.prices) != 1
        or [kind for kind, _ in shape.meta] != ["requests", "tokens"]
    ):
        return None
    (budget, budget_limit, _), (requests, _, _), (tokens, _, _) = shape.rows
    (_, rpm), (_, tpm) = shape.meta  # the limits of the two rate counters, as ints
    ((in_micro, out_micro),) = shape.prices
    factor, extra = limiter._factor, limiter._extra  # as _values: a new config drops every shape
    out_cap, wend, slots, expiring = shape.out_cap, shape.wend, shape.slots, shape.expiring
    values, expiries = counters.tables()
    get = values.get
    opened = limiter.open
    # requests (index 1 of the counters), then tokens (index 2), as _fixed_headers orders them
    (_, head_r, remaining_r, reset_r, _), (_, head_t, remaining_t, reset_t, _) = _header_rows(
        [(1, "requests", rpm), (2, "tokens", tpm)]
    )
    monotonic, ceil, max_out = _monotonic, _ceil, _MAX_OUT_TOKENS
    reset_ms, reset_of_r, reset_of_t = -1, (reset_r, b""), (reset_t, b"")  # the last reset headers, and their ms

    def usual(request_id: str, prompt_tokens: int, max_output_tokens: int | None, choices: int, now_ms: int):
        out = out_cap if max_output_tokens is None else max_output_tokens
        if choices > 1:
            out *= choices
        if out > max_out:
            out = max_out
        est = prompt_tokens + out
        reserve = -(-((ceil(prompt_tokens * factor) + extra) * in_micro + out * out_micro) // 1000)
        try:
            b, r, t = values[budget] + reserve, values[requests] + 1, values[tokens] + est
        except KeyError:  # a new counter (the first call of its period): its expiry is set below
            b, r, t = get(budget, 0) + reserve, get(requests, 0) + 1, get(tokens, 0) + est
            if b > budget_limit or r > rpm or t > tpm:
                return None
            values[budget], values[requests], values[tokens] = b, r, t
            expiries.update(expiring)  # (an existing counter has its expiry: a key is one period's)
        else:
            if b > budget_limit or r > rpm or t > tpm:
                return None
            values[budget], values[requests], values[tokens] = b, r, t
        nonlocal reset_ms, reset_of_r, reset_of_t
        if now_ms != reset_ms:  # calls a millisecond apart share their reset headers
            reset = window_reset(wend - now_ms)
            reset_ms, reset_of_r, reset_of_t = now_ms, (reset_r, reset), (reset_t, reset)
        ticket = Ticket(
            limiter,
            request_id,
            monotonic(),
            [
                head_r,
                (remaining_r, b"%d" % (rpm - r) if r < rpm else b"0"),
                reset_of_r,
                head_t,
                (remaining_t, b"%d" % (tpm - t) if t < tpm else b"0"),
                reset_of_t,
            ],
            slots,
            (reserve, est),
        )
        opened[request_id] = ticket
        return ticket

    return usual


def _usual_leased(limiter: Limiter, shape: _Shape, counters: RedisCounters) -> UsualAdmit | None:
    """The usual shape's admission on shared counters when this process's leases cover it
    (RedisCounters.admit_usual), as one function made once per shape: what at_once's shared path does for
    it (the values, the Plan, Leases.take, the Outcome, _conclude's headers and ticket), written out, as
    `_usual_admission` does for in-process counters. None (nothing counted) when a lease is short: the
    general path then plans the admission for Redis. None for any other shape, or without leases."""
    if (
        counters.leases is None
        or shape.soft
        or shape.fixed is None
        or shape.incr_idx != [_RESERVE, _ONE, _EST]
        or len(shape.prices) != 1
        or [kind for kind, _ in shape.meta] != ["requests", "tokens"]
    ):
        return None
    ((budget, limit, _, _, _),) = shape.budgets  # hard (no soft ones): the limit a lease was granted under
    (requests, _, _), (tokens, _, _) = shape.rates
    (_, rpm), (_, tpm) = shape.meta
    ((in_micro, out_micro),) = shape.prices
    factor, extra = limiter._factor, limiter._extra  # as _values: a new config drops every shape
    out_cap, wend, slots = shape.out_cap, shape.wend, shape.slots
    admit = counters.admit_usual
    opened = limiter.open
    (_, head_r, remaining_r, reset_r, _), (_, head_t, remaining_t, reset_t, _) = _header_rows(
        [(1, "requests", rpm), (2, "tokens", tpm)]
    )
    monotonic, ceil, max_out = _monotonic, _ceil, _MAX_OUT_TOKENS
    reset_ms, reset_of_r, reset_of_t = -1, (reset_r, b""), (reset_t, b"")

    def usual(request_id: str, prompt_tokens: int, max_output_tokens: int | None, choices: int, now_ms: int):
        out = out_cap if max_output_tokens is None else max_output_tokens
        if choices > 1:
            out *= choices
        if out > max_out:
            out = max_out
        est = prompt_tokens + out
        reserve = -(-((ceil(prompt_tokens * factor) + extra) * in_micro + out * out_micro) // 1000)
        after = admit(budget, limit, reserve, requests, rpm, tokens, tpm, est, now_ms)
        if after is None:
            return None
        _, r, t = after
        nonlocal reset_ms, reset_of_r, reset_of_t
        if now_ms != reset_ms:  # calls a millisecond apart share their reset headers
            reset = window_reset(wend - now_ms)
            reset_ms, reset_of_r, reset_of_t = now_ms, (reset_r, reset), (reset_t, reset)
        ticket = Ticket(
            limiter,
            request_id,
            monotonic(),
            [
                head_r,
                (remaining_r, b"%d" % (rpm - r) if r < rpm else b"0"),
                reset_of_r,
                head_t,
                (remaining_t, b"%d" % (tpm - t) if t < tpm else b"0"),
                reset_of_t,
            ],
            slots,
            (reserve, est),
            gen=counters.generation,
        )
        opened[request_id] = ticket
        return ticket

    return usual


def _headers(meta: list[tuple[str, int]], values: list[int], reset: bytes) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers from the most constrained counter of each kind."""
    best: dict[str, tuple[int, int]] = {}
    for (kind, limit), used in zip(meta, values):
        remaining = limit - used if used < limit else 0
        if kind not in best or remaining < best[kind][1]:
            best[kind] = (limit, remaining)
    out = []
    for kind in ("requests", "tokens"):
        if kind in best:
            limit, remaining = best[kind]
            limit_name, remaining_name, reset_name = _HEADER_NAMES[kind]
            out += [(limit_name, str(limit).encode()), (remaining_name, str(remaining).encode()), (reset_name, reset)]
    return out
