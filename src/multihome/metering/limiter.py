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
from collections.abc import Callable

from ..identity.principal import Principal
from ..schema.errors import ApiError
from .config import MeteringConfig
from .counters import BUDGET, DEPLOYMENT, OK, Outcome, Plan
from .periods import Periods, go_duration, window
from .prices import PriceTable, reserve_nanos
from .rules import BudgetSpec, Rules, prompt_reserve

log = logging.getLogger("multihome.metering")
_WINDOW_GRACE_MS = 60_000  # a rate counter lives one window longer, for late settlements
_NO_HEADERS: list[tuple[bytes, bytes]] = []


class Ticket:
    """One admitted call's reservations. Settle or release it exactly once."""

    __slots__ = ("request_id", "headers", "deployment", "skip", "over_budget", "warnings", "created",
                 "_budgets", "_tokens", "_limiter", "settled")

    def __init__(self, limiter: Limiter | None, request_id: str) -> None:
        self.request_id = request_id
        self.headers: list[tuple[bytes, bytes]] = _NO_HEADERS  # x-ratelimit-*, to add to the answer
        self.deployment: str | None = None  # the deployment whose rate limit was charged
        self.skip: frozenset[str] = frozenset()  # planned deployments over their own rate limit
        self.over_budget = False  # a soft budget is exceeded (the call is allowed, and flagged)
        self.warnings: list[str] = []
        self.created = time.monotonic()
        self._budgets: list[tuple[str, str, int]] = []  # (counter, currency, reserved nano-units)
        self._tokens: list[tuple[str, int]] = []  # (tokens-per-minute counter, reserved tokens)
        self._limiter = limiter
        self.settled = False

    def settle(self, cost_nanos: int, currency: str, tokens: int) -> bool:
        """Replace the reservations with what the call actually cost and used. False if already settled."""
        if self.settled:
            return False
        self.settled = True
        deltas = [(key, (cost_nanos if cur == currency else 0) - held) for key, cur, held in self._budgets]
        deltas += [(key, tokens - held) for key, held in self._tokens]
        if self._limiter is not None:
            self._limiter._finish(self, [d for d in deltas if d[1]])
        return True

    def release(self) -> bool:
        """The call was never answered (or never reached a provider): give everything back."""
        return self.settle(0, "", 0)


class Limiter:
    def __init__(self, cfg: MeteringConfig, prices: PriceTable, counters=None, clock: Callable[[], float] = time.time) -> None:
        from .counters import LocalCounters

        self.cfg = cfg
        self.prices = prices
        self.rules = Rules(cfg)
        self.counters = counters if counters is not None else LocalCounters()
        self.clock = clock
        self.periods = Periods()
        self.open: dict[str, Ticket] = {}
        self.overloaded: Callable[[], bool] | None = None  # set by Metering: its writer's backlog is full
        self._pending: dict[str, int] = {}  # settlement deltas not yet sent to Redis
        self._flusher: asyncio.Task | None = None
        self._closing = False
        self._sweeper: asyncio.Task | None = None
        self._factor, self._extra = cfg.prompt_reserve.factor, cfg.prompt_reserve.extra_tokens

    # -- the hot path ------------------------------------------------------------------------------
    async def admit(self, principal: Principal, model_group: str, deployments: list, prompt_tokens: int,
                    max_output_tokens: int | None, request_id: str) -> Ticket:
        if self.overloaded is not None and self.overloaded():
            raise ApiError(503, "The gateway cannot record usage fast enough right now; retry shortly.",
                           type="server_error", code="usage_backlog", headers={"retry-after": "1"})
        ticket = Ticket(self, request_id)
        if not self.rules.any:
            return ticket
        budgets, rates = self.rules.for_principal(principal)
        out_tokens = self._output_tokens(deployments, max_output_tokens)
        est_tokens = prompt_tokens + out_tokens
        now = self.clock()
        now_ms = int(now * 1000)
        wid, wend = window(now_ms)
        plan = Plan(rate_expire_ms=wend + _WINDOW_GRACE_MS)
        if budgets:
            reserve = self._reserve(deployments, prompt_reserve(prompt_tokens, self._factor, self._extra), out_tokens)
            for b in budgets:
                per = self.periods.get(b.period, now)
                key = b.base + per.bucket
                held = reserve.get(b.currency, 0)
                # A period counter expires a day after its period ends (totals never do).
                plan.budgets.append((key, b.limit_nanos, held, b.hard, per.end_ms + 86_400_000 if per.end_ms else 0))
                ticket._budgets.append((key, b.currency, held))
        meta: list[tuple[str, int]] = []  # per rate counter: ("requests"|"tokens", limit)
        for r in rates:
            self._rate_counters(r, wid, est_tokens, plan.rates, meta, ticket)
        group_meta: list[list[tuple[str, int]]] = []
        limited = [d for d in deployments if self.rules.for_deployment(d.name) is not None]
        if limited:
            for dep in deployments:
                spec = self.rules.for_deployment(dep.name)
                counters: list = []
                gm: list[tuple[str, int]] = []
                if spec is not None:
                    self._rate_counters(spec, wid, est_tokens, counters, gm, None)
                plan.groups.append(counters)
                group_meta.append(gm)
                if spec is None:
                    break  # an unlimited deployment always fits: nothing after it can be charged
        outcome = await self._run(plan, now_ms, ticket)
        if outcome is None:
            return ticket  # Redis unreachable and fail_open: admitted without limits
        if outcome.code != OK:
            raise self._refusal(outcome, plan, budgets, rates, deployments, meta, now_ms, wend, est_tokens)
        if outcome.index >= 0 and plan.groups:
            chosen = deployments[outcome.index]
            ticket.deployment = chosen.name
            ticket.skip = frozenset(d.name for d in deployments[: outcome.index])
            for (key, _, incr), (kind, _) in zip(plan.groups[outcome.index], group_meta[outcome.index]):
                if kind == "tokens":
                    ticket._tokens.append((key, incr))
            meta = meta + group_meta[outcome.index]
        nb = len(plan.budgets)
        for b, used in zip(budgets, outcome.values[:nb]):
            if not b.hard and used > b.limit_nanos:
                ticket.over_budget = True
                ticket.warnings.append(f"{b.describe()} is exceeded")
        if meta:
            ticket.headers = _headers(meta, outcome.values[nb:], wend - now_ms)
        if ticket.warnings:
            ticket.headers = [*ticket.headers, (b"x-multihome-budget-warning", "; ".join(ticket.warnings).encode())]
        self.open[request_id] = ticket
        return ticket

    def _output_tokens(self, deployments, max_output_tokens: int | None) -> int:
        if max_output_tokens is not None:
            return max_output_tokens
        caps = [d.max_output_tokens for d in deployments if d.max_output_tokens]
        return max(caps) if caps else self.cfg.default_max_output_tokens

    def _reserve(self, deployments, tokens_in: int, tokens_out: int) -> dict[str, int]:
        """Worst case per currency: the dearest input and output prices among the planned deployments."""
        worst: dict[str, list[int]] = {}
        for dep in deployments:
            price = self.prices.get(dep.name)
            if price is None:
                continue
            w = worst.setdefault(price.currency, [0, 0])
            w[0], w[1] = max(w[0], price.in_micro), max(w[1], price.out_micro)
        return {cur: reserve_nanos(tokens_in, i, tokens_out, o) for cur, (i, o) in worst.items()}

    def _rate_counters(self, spec, wid: int, est_tokens: int, out: list, meta: list, ticket: Ticket | None) -> None:
        if spec.rpm is not None:
            out.append((f"{spec.base}:r:{wid}", spec.rpm, 1))
            meta.append(("requests", spec.rpm))
        if spec.tpm is not None:
            key = f"{spec.base}:t:{wid}"
            out.append((key, spec.tpm, est_tokens))
            meta.append(("tokens", spec.tpm))
            if ticket is not None:
                ticket._tokens.append((key, est_tokens))

    async def _run(self, plan: Plan, now_ms: int, ticket: Ticket) -> Outcome | None:
        if not self.counters.shared:
            return self.counters.admit(plan, now_ms)
        try:
            return await self.counters.admit(plan, now_ms)
        except Exception as exc:  # redis errors, timeouts, connection refused
            if not self.cfg.fail_open:
                raise ApiError(503, "Budgets and rate limits cannot be checked right now; retry shortly.",
                               type="server_error", code="limits_unavailable", headers={"retry-after": "1"}) from None
            log.warning("limits not enforced for %s: counters unreachable (%s)", ticket.request_id, type(exc).__name__)
            ticket._budgets, ticket._tokens = [], []
            ticket.headers = [(b"x-multihome-limits", b"unavailable")]
            return None

    def _refusal(self, outcome: Outcome, plan: Plan, budgets, rates, deployments, meta, now_ms, wend, est_tokens) -> ApiError:
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
                type="insufficient_quota", code="budget_exceeded", headers=headers,
            )
        wait_ms = wend - now_ms
        headers = {"retry-after": str(math.ceil(wait_ms / 1000)), "retry-after-ms": str(wait_ms)}
        if outcome.code == DEPLOYMENT:
            names = ", ".join(d.name for d in deployments[: len(plan.groups)])
            return ApiError(429, f"Rate limit reached on every deployment that could serve this call ({names}). "
                            f"Please try again in {go_duration(wait_ms)}.", type="requests",
                            code="rate_limit_exceeded", headers=headers)
        key, limit, incr = plan.rates[outcome.index]
        kind = meta[outcome.index][0]
        r = next(r for r in rates if key.startswith(r.base + ":"))
        per_min = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        headers |= {f"x-ratelimit-limit-{kind}": str(limit), f"x-ratelimit-remaining-{kind}": str(max(0, limit - outcome.values[0])),
                    f"x-ratelimit-reset-{kind}": go_duration(wait_ms)}
        return ApiError(
            429,
            f"Rate limit reached for {r.scope} {r.id} on {per_min}: Limit {limit}, Used {outcome.values[0]}, "
            f"Requested {incr}. Please try again in {go_duration(wait_ms)}.",
            type=kind, code="rate_limit_exceeded", headers=headers,
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
        if not deltas:
            return
        if not self.counters.shared:
            self.counters.adjust(deltas)
            return
        # Settlements are merged per counter and sent together: one script call for many calls.
        pending = self._pending
        for key, delta in deltas:
            pending[key] = pending.get(key, 0) + delta
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_settlements())

    async def _flush_settlements(self) -> None:
        try:
            await asyncio.sleep(0)  # let the settlements of this loop iteration join the batch
            backoff = 0.05
            while self._pending:
                batch, self._pending = self._pending, {}
                deltas = [(k, d) for k, d in batch.items() if d]
                try:
                    await self.counters.adjust_async(deltas)
                    backoff = 0.05
                except Exception as exc:
                    # Kept and retried: a lost settlement would leave a reservation counted forever.
                    log.warning("could not settle %d counters in Redis (%s); retrying", len(deltas), type(exc).__name__)
                    for key, delta in deltas:
                        self._pending[key] = self._pending.get(key, 0) + delta
                    if self._closing:
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            self._flusher = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.counters.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._closing = True
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=5)
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
        """Wait for settlements in flight to reach Redis (tests, shutdown)."""
        for _ in range(100):
            if self._flusher is None:
                return
            await asyncio.wait([self._flusher], timeout=5)


def _headers(meta: list[tuple[str, int]], values: list[int], reset_ms: int) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers from the most constrained counter of each kind."""
    best: dict[str, tuple[int, int]] = {}
    for (kind, limit), used in zip(meta, values):
        remaining = max(0, limit - used)
        if kind not in best or remaining < best[kind][1]:
            best[kind] = (limit, remaining)
    reset = go_duration(reset_ms).encode()
    out = []
    for kind in ("requests", "tokens"):
        if kind in best:
            limit, remaining = best[kind]
            out += [(f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                    (f"x-ratelimit-remaining-{kind}".encode(), str(remaining).encode()),
                    (f"x-ratelimit-reset-{kind}".encode(), reset)]
    return out
