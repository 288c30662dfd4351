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
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..config.metering import MeteringConfig
from ..schema import header_text
from ..schema.errors import ApiError
from ..schema.principal import Principal
from .counters import BUDGET, DEPLOYMENT, OK, Outcome, Plan
from .periods import WINDOW_MS, Periods, go_duration
from .prices import PriceTable, reserve_nanos
from .rules import BudgetSpec, Rules, prompt_reserve, window_expire_ms, window_key

if TYPE_CHECKING:
    from .counters import LocalCounters
    from .counters_redis import RedisCounters  # redis-py only when the config names a Redis

log = logging.getLogger("multihome.metering")
_NO_HEADERS: list[tuple[bytes, bytes]] = []
_NO_SKIP: frozenset[str] = frozenset()
_monotonic = time.monotonic
# More output than any model makes, yet small enough that a reservation stays an exact integer in
# Redis (2^53) and cannot overflow INCRBY: an absurd max_tokens x n is refused, not a script error.
_MAX_OUT_TOKENS = 1 << 32


class Ticket:
    """One admitted call's reservations. Settle or release it exactly once."""

    __slots__ = (
        "request_id",
        "headers",
        "deployment",
        "skip",
        "over_budget",
        "warnings",
        "created",
        "_budgets",
        "_tokens",
        "_limiter",
        "settled",
        "gen",
    )

    def __init__(self, limiter: Limiter | None, request_id: str) -> None:
        self.request_id = request_id
        self.headers: list[tuple[bytes, bytes]] = _NO_HEADERS  # x-ratelimit-*, to add to the answer
        self.deployment: str | None = None  # the deployment whose rate limit was charged
        self.skip: frozenset[str] = _NO_SKIP  # planned deployments over their own rate limit
        self.over_budget = False  # a soft budget is exceeded (the call is allowed, and flagged)
        self.warnings: list[str] = []
        self.created = _monotonic()
        self._budgets: list[tuple[str, str, int, int]] = []  # (counter, currency, reserved nano-units, expire_at_ms)
        self._tokens: list[tuple[str, int]] = []  # (tokens-per-minute counter, reserved tokens)
        self._limiter = limiter
        self.settled = False
        self.gen = 0  # the counters' generation the reservations were made in

    def settle(self, cost_nanos: int, currency: str, tokens: int) -> bool:
        """Replace the reservations with what the call actually cost and used. False if already settled."""
        if self.settled:
            return False
        self.settled = True
        limiter = self._limiter
        if limiter is not None and self.gen != limiter.counters.generation:
            # The counters were emptied and re-seeded since admission: the reservation is not in
            # them, and this call's usage row is not in the seed. Add what it used, in full.
            deltas = [(key, cost_nanos if cur == currency else 0) for key, cur, _, _ in self._budgets]
            deltas += [(key, tokens) for key, _ in self._tokens]
        else:
            deltas = [(key, (cost_nanos if cur == currency else 0) - held) for key, cur, held, _ in self._budgets]
            deltas += [(key, tokens - held) for key, held in self._tokens]
        if limiter is not None:
            limiter._finish(self, [d for d in deltas if d[1]])
        return True

    def release(self) -> bool:
        """The call was never answered (or never reached a provider): give everything back."""
        return self.settle(0, "", 0)


class _Route:
    """What admission needs from one planned deployment list, worked out once per list."""

    __slots__ = ("deployments", "worst", "out_cap", "dep_specs")

    def __init__(self, deployments, prices: PriceTable, rules: Rules, default_out: int) -> None:
        self.deployments = tuple(deployments)  # kept alive: the route cache is keyed by their ids
        # Worst case per currency: the dearest input and output prices among the planned deployments.
        worst: dict[str, tuple[int, int]] = {}
        for dep in deployments:
            price = prices.get(dep.name)
            if price is not None:
                i, o = worst.get(price.currency, (0, 0))
                worst[price.currency] = (max(i, price.in_micro), max(o, price.out_micro))
        self.worst = worst
        # When the request names no max_tokens: the most any planned deployment may write, a
        # deployment that declares no max_output_tokens counting as default_out.
        self.out_cap = max((d.max_output_tokens or default_out for d in deployments), default=default_out)
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
    """One caller's rules on one planned route, with the counter keys of the current minute and day
    worked out once, not per call: each admission only fills in its reservations."""

    __slots__ = ("owner", "wid", "budgets", "rates", "groups", "meta", "group_meta", "rate_expire_ms", "fixed")

    def __init__(self, owner: tuple, budgets, rates, route: _Route, wid: int, periods: dict) -> None:
        self.owner = owner  # the rule tuples and route it was made for (kept alive: the cache is keyed by id)
        self.wid = wid  # a new minute also starts every new day, period bucket included
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
        self.rate_expire_ms = window_expire_ms(wid)
        # Without deployment limits and with at most one counter of each kind (the usual shape), the
        # x-ratelimit-* headers need no search for the most constrained counter: their names and limits
        # are fixed here, and each admission only fills in what remains (see `_fixed_headers`).
        kinds = [kind for kind, _ in self.meta]
        self.fixed: list[tuple[int, bytes, bytes, bytes, bytes, int]] | None = None
        if not route.dep_specs and len(set(kinds)) == len(kinds):
            order = sorted(range(len(kinds)), key=lambda i: _KIND_ORDER[kinds[i]])
            self.fixed = [(i, *_HEADER_NAMES[kinds[i]], str(self.meta[i][1]).encode(), self.meta[i][1]) for i in order]


def _counters(spec, wid: int, out: list, meta: list) -> None:
    if spec.rpm is not None:
        out.append((window_key(spec, "r", wid), spec.rpm, False))
        meta.append(("requests", spec.rpm))
    if spec.tpm is not None:
        out.append((window_key(spec, "t", wid), spec.tpm, True))
        meta.append(("tokens", spec.tpm))


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
        # Set by Metering: its writer's backlog is full, or its usage spool cannot take new calls' rows.
        self.overloaded: Callable[[], bool] | None = None
        self.spool_refusing: Callable[[], bool] | None = None  # set by Metering: which of the two
        # Set by Metering: seeds the counters of the current period and rate window from stored usage.
        self.reseed_from_usage: Callable[[], Awaitable[None]] | None = None
        self._sweeper: asyncio.Task | None = None
        self._factor, self._extra = cfg.prompt_reserve.factor, cfg.prompt_reserve.extra_tokens
        self._routes: dict[tuple, _Route] = {}
        self._shapes: dict[tuple[int, int, int], _Shape] = {}
        self._resets: dict[int, bytes] = {}  # go_duration of a reset, by ms, within the current minute
        self._resets_wid = -1

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
    ) -> Ticket:
        """`max_output_tokens` caps one choice (None: the client set no cap); `choices` is how many
        the call generates (chat's `n`), so the reservation covers choices x the cap."""
        if self.overloaded is not None and self.overloaded():
            raise self._overload_error()
        ticket = Ticket(self, request_id)
        if not self.rules.any:
            return ticket
        budgets, rates = self.rules.for_principal(principal)
        route = self._route(deployments)
        out_tokens = max_output_tokens if max_output_tokens is not None else route.out_cap
        if choices > 1:
            out_tokens *= choices
        if out_tokens > _MAX_OUT_TOKENS:
            out_tokens = _MAX_OUT_TOKENS
        est_tokens = prompt_tokens + out_tokens
        now = self.clock()
        now_ms = int(now * 1000)
        wid = now_ms // WINDOW_MS
        wend = (wid + 1) * WINDOW_MS
        shape = self._shape(budgets, rates, route, wid, now)
        plan = Plan(rate_expire_ms=shape.rate_expire_ms)
        if budgets:
            tokens_in = prompt_reserve(prompt_tokens, self._factor, self._extra)
            reserve = {cur: reserve_nanos(tokens_in, i, out_tokens, o) for cur, (i, o) in route.worst.items()}
            plan_budgets, held_budgets = plan.budgets, ticket._budgets
            for key, limit, hard, currency, expire in shape.budgets:
                held = reserve.get(currency, 0)
                plan_budgets.append((key, limit, held, hard, expire))
                held_budgets.append((key, currency, held, expire))
        plan_rates = plan.rates
        for key, limit, tokens in shape.rates:
            if tokens:
                plan_rates.append((key, limit, est_tokens))
                ticket._tokens.append((key, est_tokens))
            else:
                plan_rates.append((key, limit, 1))
        for group in shape.groups:
            plan.groups.append([(key, limit, est_tokens if tokens else 1) for key, limit, tokens in group])
        meta, group_meta = shape.meta, shape.group_meta
        counters = self.counters
        # In-process counters answer at once: no coroutine per call to ask them.
        outcome = counters.admit(plan, now_ms) if not counters.shared else await self._run(plan, now_ms, ticket)
        if outcome is None:
            return ticket  # Redis unreachable and fail_open: admitted without limits
        if outcome.code != OK:
            raise self._refusal(outcome, plan, budgets, rates, deployments, meta, now_ms, wend, est_tokens)
        ticket.gen = outcome.gen
        if outcome.index >= 0 and plan.groups:
            chosen = deployments[outcome.index]
            ticket.deployment = chosen.name
            ticket.skip = frozenset(d.name for d in deployments[: outcome.index])
            for (key, _, incr), (kind, _) in zip(plan.groups[outcome.index], group_meta[outcome.index]):
                if kind == "tokens":
                    ticket._tokens.append((key, incr))
            meta = meta + group_meta[outcome.index]
        values = outcome.values
        nb = len(budgets)
        for i in range(nb):
            b = budgets[i]
            if not b.hard and values[i] > b.limit_nanos:
                ticket.over_budget = True
                ticket.warnings.append(f"{b.describe()} is exceeded")
        if meta:
            reset = self._reset(wid, wend - now_ms)
            fixed = shape.fixed
            if fixed is not None:
                ticket.headers = _fixed_headers(fixed, values, nb, reset)
            else:
                ticket.headers = _headers(meta, values[nb:], reset)
        if ticket.warnings:
            warning = header_text.text("; ".join(ticket.warnings)).encode()
            ticket.headers = [*ticket.headers, (b"x-multihome-budget-warning", warning)]
        self.open[request_id] = ticket
        return ticket

    def use_rules(self, rules: Rules) -> None:
        """Switch to new rules (budgets changed): admissions from now on resolve against them.
        Tickets already admitted keep their reservations and settle them as before."""
        self.rules = rules
        self._routes = {}  # built from the old rules
        self._shapes = {}

    def _route(self, deployments) -> _Route:
        key = tuple(map(id, deployments))  # the route keeps the deployments alive, so their ids stay theirs
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) > 10_000:  # bounded: plans come from config, not from request bodies
                self._routes.clear()
            route = self._routes[key] = _Route(deployments, self.prices, self.rules, self.cfg.default_max_output_tokens)
        return route

    def _shape(self, budgets, rates, route: _Route, wid: int, now: float) -> _Shape:
        key = (id(budgets), id(rates), id(route))
        shape = self._shapes.get(key)
        if shape is None or shape.wid != wid:
            if shape is None and len(self._shapes) > 10_000:  # bounded: callers x routes
                self._shapes.clear()
            periods = self.periods.at(now)
            shape = self._shapes[key] = _Shape((budgets, rates, route), budgets, rates, route, wid, periods)
        return shape

    def _reset(self, wid: int, ms: int) -> bytes:
        """The x-ratelimit-reset-* value for `ms` before the minute ends, formatted once per value."""
        if wid != self._resets_wid:
            self._resets_wid, self._resets = wid, {}
        value = self._resets.get(ms)
        if value is None:
            value = self._resets[ms] = go_duration(ms).encode()
        return value

    async def _run(self, plan: Plan, now_ms: int, ticket: Ticket) -> Outcome | None:
        if not self.counters.shared:
            return self.counters.admit(plan, now_ms)
        try:
            return await self.counters.admit(plan, now_ms)
        except Exception as exc:  # redis errors, timeouts, connection refused
            if not self.cfg.fail_open:
                raise ApiError(
                    503,
                    "Budgets and rate limits cannot be checked right now; retry shortly.",
                    type="server_error",
                    code="limits_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            log.warning("limits not enforced for %s: counters unreachable (%s)", ticket.request_id, type(exc).__name__)
            ticket._budgets, ticket._tokens = [], []
            ticket.headers = [(b"x-multihome-limits", b"unavailable")]
            return None

    def _refusal(
        self, outcome: Outcome, plan: Plan, budgets, rates, deployments, meta, now_ms, wend, est_tokens
    ) -> ApiError:
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
                f"flight; this call could cost up to {want:.6f}).{when} Ask your tenant admin to raise the budget.",
                type="insufficient_quota",
                code="budget_exceeded",
                headers=headers,
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

    def _finish(self, ticket: Ticket, deltas: list[tuple[str, int]]) -> None:
        self.open.pop(ticket.request_id, None)
        if deltas:
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
        items = []
        for ticket in list(self.open.values()):
            items += [(key, 0, expire) for key, _, _, expire in ticket._budgets]
            items += [(key, 0, window_expire_ms(int(key.rsplit(":", 1)[1]))) for key, _ in ticket._tokens]
        await self.counters.seed(items)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
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


def _fixed_headers(
    fixed: list[tuple[int, bytes, bytes, bytes, bytes, int]], values: list[int], nb: int, reset: bytes
) -> list[tuple[bytes, bytes]]:
    """`_headers` for a shape with at most one counter of each kind: names and limits made once per
    minute (_Shape.fixed), only the remaining counts formatted per call."""
    out = []
    for i, limit_name, remaining_name, reset_name, limit_text, limit in fixed:
        used = values[nb + i]
        out += [
            (limit_name, limit_text),
            (remaining_name, str(limit - used).encode() if used < limit else b"0"),
            (reset_name, reset),
        ]
    return out


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
