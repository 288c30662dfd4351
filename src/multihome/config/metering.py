"""The `metering:` config section: budgets, rate limits, reservation knobs, the usage writer.

Absent section = metering on (usage rows and costs), no budgets, no rate limits.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from .decimals import exact, places, unsigned_zero
from .struct import Strict

# A budget's counter holds nano-units in a signed 64-bit integer (Redis), so an amount is at most a billion
# with at most 9 decimal places: the admin API's rule too (storage/budgets.py), here for config budgets.
BUDGET_MAX = Decimal(1_000_000_000)
BUDGET_PLACES = 9


class BudgetRule(Strict):
    scope: Literal["tenant", "team", "key"]
    # The tenant / team / key id this budget applies to, or "*": each one separately.
    # `key` means the API key id; for credentials without one (OIDC, static env keys) the subject.
    id: str
    amount: str | int | float  # in `currency`; parsed with Decimal(str(amount))
    currency: str = "USD"
    period: Literal["day", "month", "total"] = "month"  # UTC calendar day / month, or forever
    mode: Literal["hard", "soft"] = "hard"  # hard: refuse with 429; soft: allow and flag

    @property
    def limit(self) -> Decimal:
        # Not exact(): a stored budget's amount is read by rows.budget, which a hand-edited "+5" passes; -0 is 0.
        return unsigned_zero(Decimal(str(self.amount)))


class RateLimitRule(Strict):
    scope: Literal["tenant", "team", "key", "deployment"]
    id: str  # or "*": each tenant/team/key/deployment separately
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class PromptReserve(Strict):
    # The prompt-token estimate is a heuristic (4 characters per token); reserve a margin above it
    # so a budget is not overshot by a bad guess: ceil(estimate * factor) + extra_tokens.
    factor: float = 1.25
    extra_tokens: int = 16


class WriterConfig(Strict):
    batch_size: int = 500  # rows per transaction (group commit)
    flush_interval_ms: int = 50  # a row waits at most this long for its batch
    # Above this many unwritten rows, new calls are refused (503) instead of risking lost usage.
    max_backlog: int = 50_000
    # ... and above this many seconds of writing at the rate the database has been taking rows, so
    # a graceful stop can write every accepted row in about this long after its drain.
    max_backlog_s: float = 10.0


class SpoolConfig(Strict):
    # Every usage row is written to a local file before its call is answered and kept until the
    # database has it, so a killed process (kill -9, OOM) loses no answered call's row: the next
    # start replays what it left (docs/metering.md "The usage spool").
    enabled: bool = True
    # Default: `usage-spool` beside a SQLite database file; with another database
    # $XDG_STATE_HOME/multihome/usage-spool (else ~/.local/state/...; the image's home is its data dir).
    dir: str | None = None
    # 0: never fsync. A row is in the kernel before the answer, which survives the death of the
    # process but not of the machine; > 0: fdatasync the spool this often (a power loss then loses at
    # most about this long of answered calls' rows), off the event loop.
    fsync_interval_ms: Annotated[float, msgspec.Meta(ge=0)] = 0
    segment_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 8 * 1024 * 1024  # a new file past this size
    # How often a running process looks for files of dead processes (other workers, a shared volume).
    rescan_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class MeteringConfig(Strict):
    # Shares budget and rate-limit counters across replicas; unset = per process.
    redis_url_env: str | None = None
    key_prefix: str = "mh:"
    # With Redis: each replica holds leases of counter capacity (granted under the limits), so most
    # admissions need no Redis round trip; false: every admission asks Redis (docs/metering.md "Leases").
    redis_leases: bool = True
    # A Redis with maxmemory set and a policy other than noeviction may evict budget and rate counters
    # (a budget's spend forgotten mid-period, spent again): the gateway refuses to start on one unless
    # this is true, which accepts that risk (a warning is logged; docs/metering.md "Redis memory").
    redis_allow_eviction: bool = False
    # When Redis cannot be reached: true = admit the call (limits not enforced, logged),
    # false = refuse with 503 limits_unavailable.
    fail_open: bool = True
    # Output tokens to reserve for when the client sets no max_tokens and no planned deployment
    # declares max_output_tokens.
    default_max_output_tokens: int = 4096
    prompt_reserve: PromptReserve = msgspec.field(default_factory=PromptReserve)
    budgets: list[BudgetRule] = msgspec.field(default_factory=list)
    rate_limits: list[RateLimitRule] = msgspec.field(default_factory=list)
    writer: WriterConfig = msgspec.field(default_factory=WriterConfig)
    spool: SpoolConfig = msgspec.field(default_factory=SpoolConfig)
    # A reservation never settled (the front door lost the call) is released after this long.
    ticket_ttl_s: float = 900.0


def budget_problem(amount: str | int | float) -> str | None:
    """What is wrong with a config budget's amount (None: fine). Infinity would fail every call (500),
    "1e400" overflow the Redis counters, "1E-400" be a budget of 0."""
    try:
        limit = exact(amount)
    except ValueError as exc:
        return str(exc)
    if limit < 0:
        return "must not be negative"
    if limit > BUDGET_MAX:
        return f"must be at most {BUDGET_MAX}"
    if places(limit) > BUDGET_PLACES:
        return f"has more than {BUDGET_PLACES} decimal places (budgets count in nano-units)"
    return None


def currency_problem(code: str) -> str | None:
    """What is wrong with a price's or a budget's currency (None: fine). Budgets and contracts count a call's
    cost only in its price's code, compared as written: a price in "usd" escaped every USD budget."""
    if re.fullmatch(r"[A-Z]{3}", code):
        return None
    return (
        f"must be a three-letter ISO 4217 code in capitals, such as USD, not '{code[:64]}' (budgets and contracts "
        "count a call's cost only in the currency code its price names)"
    )


def check(cfg: MeteringConfig, deployments: set[str]) -> list[str]:
    """Problems as `metering.<path>: what is wrong` (empty list = fine)."""
    problems = []
    for i, b in enumerate(cfg.budgets):
        found = budget_problem(b.amount)
        if found is not None:
            problems.append(f"metering.budgets[{i}].amount: {found}")
        found = currency_problem(b.currency)
        if found is not None:
            problems.append(f"metering.budgets[{i}].currency: {found}")
    for i, r in enumerate(cfg.rate_limits):
        if r.requests_per_minute is None and r.tokens_per_minute is None:
            problems.append(f"metering.rate_limits[{i}]: set requests_per_minute and/or tokens_per_minute")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(r, name)
            if value is not None and value < 0:
                problems.append(f"metering.rate_limits[{i}].{name}: must not be negative")
        if r.scope == "deployment" and r.id != "*" and r.id not in deployments:
            problems.append(f"metering.rate_limits[{i}].id: unknown deployment '{r.id}'")
    if cfg.writer.batch_size < 1 or cfg.writer.max_backlog < 1:
        problems.append("metering.writer: batch_size and max_backlog must be at least 1")
    if not cfg.writer.max_backlog_s > 0:
        problems.append("metering.writer.max_backlog_s: must be more than 0")
    return problems


def per_process_limits(cfg: MeteringConfig, storage: bool) -> list[str]:
    """What would be counted by each process on its own, without Redis: the config's budgets and rate
    limits, and (with storage) the budgets an admin can set at any time. Empty with Redis, or when
    nothing is limited. `serve --workers N` refuses to start on a non-empty answer: N workers counting
    apart would together allow up to N times each limit."""
    if cfg.redis_url_env is not None:
        return []
    found = []
    if cfg.budgets:
        found.append("metering.budgets")
    if cfg.rate_limits:
        found.append("metering.rate_limits")
    if storage:
        found.append("budgets set through the admin API (storage is configured)")
    return found
