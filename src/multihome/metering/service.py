"""`Metering`: the CallSink that prices each call, settles its ticket, stores a usage row and hands
a `MeteredCall` to contracts. Also the lifecycle owner of the limiter and the usage writer.

Integration (app.py): `metering = Metering.from_config(config)`; add it to `services` after the
storage service (it writes to the tables storage migrates); call `metering.limiter.admit(...)`
before a call, register `metering` as a CallSink, and call `metering.limiter.release(request_id)`
in the front door's `finally` for calls that end without a CallRecord.

With a spool directory (`metering.spool`, default under the data directory) every usage row is on
local disk before its call is answered (spool.py), and `start` first writes the rows a killed
process left there (replay.py), before it seeds budget counters from the stored rows.

Budgets set through the admin API arrive through the storage snapshot (`metering.snapshots`, a
SnapshotCache): on every change the limiter's rules become the config budgets plus the stored
ones, after the counters of budgets new to this process are seeded from stored usage.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

import msgspec
import sqlalchemy as sa

from ..accounting.record import CallRecord, Usage
from ..aio import cancel_and_wait
from ..config import env_secret
from ..config.call_bound import longest_call_s
from ..config.metering import BudgetRule, MeteringConfig
from ..outage_log import OutageLog
from .limiter import Limiter
from .periods import UTC, WINDOW_MS, Period, period, window
from .prices import PriceTable
from .record import MeteredCall, MeteredSink, SpoolHolder
from .row import Row, stamp_pairs
from .rules import AdminBudget, BudgetSpec, Rules, admin_budget, principal_key, slot, window_expire_ms, window_key

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..accounting.tracker import CallTracker
    from ..config.metering import SpoolConfig
    from .spool import UsageSpool
    from .writer import UsageWriter

log = logging.getLogger("multihome.metering")
# How long a repeatable call's marker lives in Redis (Metering.mark_recorded): far longer than a job's
# lease times its attempts, after which no run repeats it.
_RECORDED_TTL_MS = 86_400_000


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def reservation_config(config) -> MeteringConfig:
    """`config.metering` with `ticket_ttl_s` raised to the longest a call can last under the routing
    config (plus a minute): the sweeper must not take a long call for a lost one."""
    cfg = getattr(config, "metering", None) or MeteringConfig()
    longest = longest_call_s(config) + 60.0
    return cfg if cfg.ticket_ttl_s >= longest else msgspec.structs.replace(cfg, ticket_ttl_s=longest)


class Metering:
    # A CallSink that reads no hash of the call (accounting/record.py): the usage row holds none, and
    # neither contracts nor metrics (its MeteredSinks) read one.
    hashes = False

    def __init__(
        self,
        cfg: MeteringConfig,
        prices: PriceTable,
        *,
        storage_url: str | None = None,
        counters=None,
        clock=time.time,
        snapshots=None,
        spool_dir: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.spool_dir = spool_dir  # None: no spool (rows in memory until committed)
        self.prices = prices
        self.storage_url = storage_url
        self.limiter = Limiter(cfg, prices, counters, clock)
        self.limiter.reseed_from_usage = self._reseed
        self.sinks: list[MeteredSink] = []
        # The sinks that want calls now: a sink with a `listening` flag (record.py) is left out while it
        # is false, so no MeteredCall is made for a sink that would drop it (contracts with no agreement).
        self._listening: tuple[MeteredSink, ...] = ()
        # accounting/tracker.py: the call's tool calls are read only by a listening sink's record.
        self.reads_tool_calls = False
        self.engine: AsyncEngine | None = None
        self.writer: UsageWriter | None = None
        self.recorded = 0
        # storage.SnapshotCache (started before this service): where admin-set budgets come from.
        self.snapshots = snapshots
        self.admin_budgets: tuple[AdminBudget, ...] = ()  # the stored budgets the limiter enforces now
        self._stored: tuple | None = None  # the snapshot's budget records they were made from
        self._seeded: set[tuple[str, str, str, str, str]] = set()  # counters seeded from usage by this process
        self._wanted = self._applied = None  # newest snapshot seen / applied
        self._following: asyncio.Task | None = None
        self._rescan: asyncio.Task | None = None
        self._spool: UsageSpool | None = None
        self.holder: SpoolHolder | None = None  # see hold_spool
        self._stamps = stamp_pairs()  # a usage row's two stamps as their stored text (row.py)

    @classmethod
    def from_config(cls, config) -> Metering:
        """From the root Config: `config.metering` (absent: defaults), deployment prices, storage URL."""
        cfg = getattr(config, "metering", None) or MeteringConfig()
        counters = None
        url = env_secret(cfg.redis_url_env, what="metering.redis_url_env")
        if url is not None:
            from .counters_redis import RedisCounters

            counters = RedisCounters(
                url, prefix=cfg.key_prefix, leases=cfg.redis_leases, allow_eviction=cfg.redis_allow_eviction
            )
        storage = env_secret(config.storage.url_env, what="storage.url_env") or config.storage.url
        return cls(
            reservation_config(config),
            PriceTable.from_config(config),
            storage_url=storage,
            counters=counters,
            spool_dir=spool_directory(cfg.spool, storage),
        )

    def add_sink(self, sink: MeteredSink) -> None:
        self.sinks.append(sink)
        if hasattr(sink, "listening"):
            sink.listening_changed = self._sinks_changed  # type: ignore[attr-defined]
        self._sinks_changed()

    def _sinks_changed(self) -> None:
        """A sink's `listening` flag changed (or a sink was added): which sinks get the next calls."""
        self._listening = tuple(s for s in self.sinks if getattr(s, "listening", True))
        self.reads_tool_calls = bool(self._listening)

    def hold_spool(self, sink: SpoolHolder) -> None:
        """Add a sink whose own queue the usage spool covers too (record.SpoolHolder): each row stays in
        the spool until `sink` has committed it as well, and replayed rows are handed to it. It must be
        started before this service (start-up replays), and close after it."""
        self.add_sink(sink)
        self.holder = sink
        sink.progress = self._held_progress

    def _held_progress(self) -> None:
        if self._spool is not None:
            self._spool.recheck()

    # -- CallSink ------------------------------------------------------------------------------------
    def record(self, call: CallRecord) -> None:
        usage = call.usage
        dep = call.deployment
        price = self.prices.prices.get(dep) if dep is not None else None
        if price is not None and price.tiers is not None:  # a deployment with tier prices (prices.py)
            price = price.for_tier(call.service_tier)
        if price is not None and usage is not None:
            units, nanos, cost_text = price.charge(usage)  # exact, in integers (prices.py)
            currency = price.currency
        else:
            units, nanos, cost_text = 0, 0, "0"
            currency = price.currency if price is not None else "USD"
        over = 0  # the row's flags are 0/1 (row.py)
        ticket = self.limiter.open.get(call.request_id)
        if ticket is not None:
            over = 1 if ticket.over_budget else 0
            tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
            ticket.settle(nanos, currency, tokens)
            # Deployment limits: each counts the upstream calls made to it and the tokens it served (Ticket.walked);
            # admission counted one call on the deployment it charged, which served unless it failed over.
            if (ticket.deployment is not None or self.limiter.rules.deployments) and (
                ticket.deployment != dep or len(call.attempts) > 1 or ticket.attempted is not None
            ):
                ticket.walked(dep, tokens, call.attempts)
        self.recorded += 1
        writer = self.writer
        # A call that reached no upstream and costs nothing (refused, denied, a bad request) must not
        # feed the backlog its refusal is meant to cap: while the backlog is full it gets no row.
        free = dep is None and nanos == 0 and ticket is None
        spooled = 0
        if writer is not None and free and writer.overloaded():
            writer.skip()
        elif writer is not None:
            # The row in its final shape (row.py: usage_calls' column order, the stamps as stored text).
            # Every item its own, none starred: one BUILD_TUPLE, not a list appended to item by item.
            started, finished = self._stamps(call.started_at, call.finished_at)
            if usage is not None:
                prompt, completion = usage.prompt_tokens, usage.completion_tokens
                cached, reasoning = usage.cached_tokens, usage.reasoning_tokens
                estimated = 1 if usage.estimated else 0
            else:
                prompt = completion = cached = reasoning = estimated = 0
            spooled = writer.put(
                (
                    call.request_id,
                    started,
                    finished,
                    call.tenant,
                    call.team,
                    call.key_id or call.subject,
                    call.endpoint,
                    call.model_group,
                    dep,
                    call.provider,
                    call.status,
                    call.outcome,
                    prompt,
                    completion,
                    cached,
                    reasoning,
                    estimated,
                    call.latency_ms,
                    cost_text,
                    nanos,
                    currency,
                    self.prices.version,
                    over,
                )
            )
        sinks = self._listening
        if sinks:
            # The Decimal cost is made from price and units only if a sink asks for it.
            metered = MeteredCall.of(call, currency, self.prices.version, spooled, price, units)
            for sink in sinks:
                try:
                    sink.metered(metered)
                except Exception:
                    log.exception("metered sink %r failed on %s", sink, call.request_id)

    def record_call(
        self,
        t: CallTracker,
        finished_at: float,
        dep,
        stream: bool,
        attempts,
        status: int,
        outcome: str,
        error_code: str | None,
        usage: Usage | None,
        latency_ms: float,
        first_byte_ms: float | None,
        tool_calls,
        response_sha256: str | None,
    ) -> None:
        """accounting.CallFacts: `record` from the tracker and the call's facts, without a CallRecord (the
        same row, settlement and counts: tests/metering/test_record_call.py). A listening MeteredSink
        reads the record: then it is made, and recorded."""
        if self._listening:
            self.record(
                t.record_of(
                    finished_at,
                    dep,
                    stream,
                    attempts,
                    status,
                    outcome,
                    error_code,
                    usage,
                    latency_ms,
                    first_byte_ms,
                    tool_calls,
                    response_sha256,
                )
            )
            return
        # As `record`, line for line; the record's fields read where the tracker holds them.
        if dep is not None:
            name = dep.name
            price = self.prices.prices.get(name)
            if price is not None and price.tiers is not None:  # a deployment with tier prices (prices.py)
                price = price.for_tier(t.tier)
        else:
            name = price = None
        if price is not None and usage is not None:
            _, nanos, cost_text = price.charge(usage)
            currency = price.currency
        else:
            nanos, cost_text = 0, "0"
            currency = price.currency if price is not None else "USD"
        over = 0
        request_id = t.request_id
        ticket = self.limiter.open.get(request_id)
        if ticket is not None:
            over = 1 if ticket.over_budget else 0
            tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
            ticket.settle(nanos, currency, tokens)
            if (ticket.deployment is not None or self.limiter.rules.deployments) and (
                ticket.deployment != name or len(attempts) > 1 or ticket.attempted is not None
            ):  # as in `record` (Ticket.walked)
                ticket.walked(name, tokens, attempts)
        self.recorded += 1
        writer = self.writer
        free = dep is None and nanos == 0 and ticket is None
        if writer is not None and free and writer.overloaded():
            writer.skip()
        elif writer is not None:
            started, finished = self._stamps(t.started_at, finished_at)
            if usage is not None:
                prompt, completion = usage.prompt_tokens, usage.completion_tokens
                cached, reasoning = usage.cached_tokens, usage.reasoning_tokens
                estimated = 1 if usage.estimated else 0
            else:
                prompt = completion = cached = reasoning = estimated = 0
            who = t.principal
            writer.put(
                (
                    request_id,
                    started,
                    finished,
                    who.tenant,
                    who.team,
                    who.key_id or who.subject,
                    t.endpoint,
                    t.model_group,
                    name,
                    dep.provider if dep is not None else None,
                    status,
                    outcome,
                    prompt,
                    completion,
                    cached,
                    reasoning,
                    estimated,
                    latency_ms,
                    cost_text,
                    nanos,
                    currency,
                    self.prices.version,
                    over,
                )
            )

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.limiter.start()
        if self.storage_url is None:
            return
        from ..storage.engine import create_engine
        from .tables import usage_calls
        from .writer import UsageWriter

        self.engine = engine = create_engine(self.storage_url)
        await self._store_price_version(engine)
        self._spool = spool = self._open_spool()
        if spool is not None and self.holder is not None:
            spool.hold = self.holder.held_from
        if spool is not None:
            # Before seeding: counters kept in memory are seeded from the stored rows, replayed ones included.
            await self._replay(spool, None)
        snap = self.snapshots.snapshot if self.snapshots is not None else None
        # Seeds the config budgets' and the stored budgets' counters; a failure fails start-up.
        await self._use_budgets(tuple(admin_budget(b) for b in snap.budgets) if snap is not None else ())
        await self.seed_rates(self.limiter.rules)
        # Shared counters: count in the epoch in force, or start one with what was just seeded.
        await self.limiter.counters.claim()
        if snap is not None:
            self._stored, self._applied = snap.budgets, snap
            self.snapshots.subscribe(self._snapshot_changed)
            self._snapshot_changed(self.snapshots.snapshot)  # a change that came in meanwhile
        w = self.cfg.writer
        self.writer = writer = UsageWriter(
            engine,
            usage_calls,
            batch_size=w.batch_size,
            flush_interval_ms=w.flush_interval_ms,
            max_backlog=w.max_backlog,
            max_backlog_s=w.max_backlog_s,
            spool=spool,
        )
        self.limiter.overloaded = writer.overloaded
        if not self.limiter.counters.shared:  # a dropped in-process budget counter is read back from here
            self.limiter.seed_missing = self.seed_dropped
        if spool is not None:
            self.limiter.spool_refusing = spool.refusing
        await writer.start()
        if spool is not None:
            self._rescan = asyncio.get_running_loop().create_task(self._rescan_loop(spool), name="usage-spool-rescan")

    def _open_spool(self) -> UsageSpool | None:
        """This process's spool files; None without a spool directory, or (logged) when the default one
        cannot be made (a directory set in the config that cannot be used fails the start instead)."""
        from .spool import UsageSpool, database_id

        if self.spool_dir is None or self.storage_url is None:
            return None
        sc = self.cfg.spool
        spool = UsageSpool(
            self.spool_dir,
            database_id(self.storage_url),
            segment_bytes=sc.segment_bytes,
            fsync_interval_ms=sc.fsync_interval_ms,
        )
        try:
            spool.open()
        except OSError as exc:
            if sc.dir is not None:
                raise RuntimeError(
                    f"metering.spool.dir: cannot write usage spool files in {self.spool_dir}: {exc}"
                ) from None
            log.error(
                "no usage spool (%s: %s): a killed process loses the usage rows not yet committed; "
                "set metering.spool.dir",
                self.spool_dir,
                exc,
            )
            return None
        return spool

    async def _replay(self, spool: UsageSpool, writer: UsageWriter | None) -> int:
        """Write the rows dead processes left in the spool directory: through `writer`, or at start-up
        through a writer of its own (without spool: the files stay until their rows are committed)."""
        from .replay import replay
        from .tables import usage_calls
        from .writer import UsageWriter

        holder = self.holder

        def put(w: UsageWriter, rows: list[Row]) -> None:
            w.put_replayed(rows)
            if holder is not None:
                holder.replayed(rows)  # the ledger's accruals of these calls, idempotent as the rows are

        async def flush(w: UsageWriter, timeout: float) -> None:
            await w.flush(timeout=timeout)
            if holder is not None:
                await holder.flush(timeout)

        if writer is not None:
            return await replay(spool.dir, spool.db, spool.owns, lambda r: put(writer, r), lambda: flush(writer, 30))
        assert self.engine is not None
        w = self.cfg.writer
        own = UsageWriter(self.engine, usage_calls, batch_size=w.batch_size, flush_interval_ms=0)
        await own.start()
        try:
            return await replay(spool.dir, spool.db, spool.owns, lambda r: put(own, r), lambda: flush(own, 600))
        finally:
            await own.close()

    async def _rescan_loop(self, spool: UsageSpool) -> None:
        """Now and then, the files of processes that died while this one runs (another worker of this
        replica, a replica on a shared volume)."""
        failing = OutageLog(
            log, "usage spool: replaying a stopped process's files failed", recovered="usage spool: replayed again"
        )
        while True:
            await asyncio.sleep(self.cfg.spool.rescan_s)
            if self.writer is None:
                return
            try:
                await self._replay(spool, self.writer)
            except Exception as exc:
                failing.failed(exc)
            else:
                failing.ok()

    async def flush(self) -> None:
        await self.limiter.drain()
        if self.writer is not None:
            await self.writer.flush()

    async def stored_row(self, request_id: str) -> bool:
        """Whether a usage row of `request_id` is stored: a background turn run again after its earlier run
        recorded its call (killed, or its store gone, before its checkpoint) must not be counted twice. With
        shared counters, also whether a run recorded it and counted it in Redis (`mark_recorded`): a repeat
        on another replica can come before the dead one's row is stored (its spool is replayed only when it
        starts again), and its counts would come on top of those."""
        if self.engine is None:
            return False
        from .tables import usage_calls as t

        async with self.engine.connect() as conn:
            if await conn.scalar(sa.select(t.c.request_id).where(t.c.request_id == request_id)) is not None:
                return True
        counters = self.limiter.counters
        if not counters.shared:
            return False  # in process: a restart seeds the counters from the rows, the spool's replayed first
        try:
            (marked,) = await counters.read([self._recorded_key(request_id)], 0)
        except Exception as exc:  # Redis unreachable: counted again (an error towards refusing, never past a limit)
            log.warning("metering: cannot ask Redis whether %s was recorded (%s)", request_id, type(exc).__name__)
            return False
        return marked > 0

    def mark_recorded(self, request_id: str) -> None:
        """Call at once after recording a call that a replica taking over may run again (a background turn,
        a background run's agent step: the same request id every run). With shared counters, a marker goes
        to Redis in the same settlement batch as the call's counts (one script call applies both, or
        neither), for `stored_row` on any replica; it expires after a day. In process, nothing."""
        counters = self.limiter.counters
        if counters.shared:
            key = self._recorded_key(request_id)
            counters.adjust([(key, 1)], {key: int(self.limiter.clock() * 1000) + _RECORDED_TTL_MS})

    def _recorded_key(self, request_id: str) -> str:
        return f"{self.limiter.rules.prefix}c:{request_id}"

    async def close(self) -> None:
        # Ended before the writer and the spool close: a replay under way unlocks the files it read (the next
        # start replays them), and budgets being applied give their connection back.
        await cancel_and_wait(self._following)
        await cancel_and_wait(self._rescan)
        if self.holder is not None and self._spool is not None:
            try:  # its queue committed, so the spool lets go of the rows when the writer commits them
                await self.holder.flush(10, stopping=True)  # (sooner when the database is down: the rows are spooled)
            except Exception as exc:
                log.warning("metering: %s not flushed before closing (%s); the spool keeps its rows", self.holder, exc)
        if self.writer is not None:
            await self.writer.close()  # closes the spool
        elif self._spool is not None:
            await self._spool.close()  # start-up failed after the spool opened
        await self.limiter.close()
        if self.engine is not None:
            await self.engine.dispose()

    async def _store_price_version(self, engine: AsyncEngine) -> None:
        from ..storage.engine import write_connection
        from .tables import usage_price_versions as t

        # A write transaction from the start: on SQLite a read that later upgrades to a write fails
        # at once ("database is locked") when another writer (the audit head registry) committed
        # in between, instead of waiting its turn.
        conn = await write_connection(engine)
        try:
            async with conn.begin():
                found = (await conn.execute(sa.select(t.c.version).where(t.c.version == self.prices.version))).first()
                if found is None:
                    await conn.execute(
                        t.insert().values(
                            version=self.prices.version,
                            prices=self.prices.canonical,
                            first_seen_at=dt.datetime.now(UTC),
                        )
                    )
        except sa.exc.IntegrityError:
            pass  # another replica stored the same version at the same moment
        finally:
            await conn.close()

    # -- budgets set through the admin API ---------------------------------------------------------
    async def reconfigure(self, cfg: MeteringConfig, prices: PriceTable) -> None:
        """After a config reload: the deployments' prices and the config's budgets and rate limits. Calls
        admitted before keep their reservations; a new budget's counters are seeded from stored usage
        first, as for one set through the admin API."""
        self.cfg, self.prices = cfg, prices
        self.limiter.reconfigure(cfg, prices)
        await self._use_budgets(self.admin_budgets)

    async def refresh_budgets(self) -> None:
        """Apply the newest snapshot's budgets now (after a change made through this replica)."""
        if self.snapshots is None:
            return
        self._snapshot_changed(self.snapshots.snapshot)
        if self._following is not None:
            await asyncio.shield(self._following)

    def _snapshot_changed(self, snap) -> None:
        """SnapshotCache listener: apply the newest snapshot in one background task at a time."""
        self._wanted = snap
        if self._following is None or self._following.done():
            self._following = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while self._wanted is not self._applied:
            snap = self._wanted
            try:
                if snap.budgets != self._stored:  # most changes are keys and policies: nothing to do
                    await self._use_budgets(tuple(admin_budget(b) for b in snap.budgets))
                    self._stored = snap.budgets
            except Exception:
                log.exception("could not apply the stored budgets of snapshot %s", snap.version)
            self._applied = snap

    async def _use_budgets(self, stored: tuple[AdminBudget, ...]) -> None:
        """Make the limiter enforce the config budgets plus `stored`, seeding new counters first:
        an admission before the seed would create the counter, and the seed would then not apply."""
        rules = Rules(self.cfg, [*self.cfg.budgets, *stored])
        new = [r for r in rules.budget_rules if slot(r) not in self._seeded]
        if new and self.engine is not None:
            try:
                if self.writer is not None:  # this replica's usage rows into the database, so into the seed
                    await self.writer.flush(timeout=5)
                await self.seed_budgets(new, rules)
            except Exception as exc:
                if self.writer is None:
                    raise  # at start-up: do not serve with budgets that forgot this period's spend
                # Enforce the change anyway, counting from what the counters hold (fail towards limits).
                log.error("new budget counters not seeded from stored usage (%s); they count from now", exc)
        # Only the slots of the budgets in force: a tenant admin creating and deleting budgets of new ids grew
        # the set for good. A budget deleted and made again is seeded again, which changes nothing if its
        # counter still runs (a seed sets only a counter that does not exist).
        self._seeded = {slot(r) for r in rules.budget_rules}
        self.limiter.use_rules(rules)
        self.admin_budgets = stored

    async def seed_budgets(self, budgets: list[BudgetRule], rules: Rules) -> None:
        """Start these budgets' counters for the current period from stored usage, so a restart (or an
        empty Redis, or a budget created mid-month) keeps this period's spend.

        Seeding sets a counter only if it does not exist (SET NX in Redis): a running replica's
        counters, which also hold reservations in flight, always win. `rules` decides which budgets
        apply to each id (an explicit rule for an id replaces the "*" rules of its scope).
        """
        from .tables import usage_calls as u

        if self.engine is None:
            return  # nothing stored to seed from (as seed_rates)
        column = {"tenant": u.c.tenant_id, "team": u.c.team_id, "key": u.c.key_id}
        now = self.limiter.clock()
        items: list[tuple[str, int, int]] = []
        for rule in budgets:
            per = period(rule.period, now)
            col = column[rule.scope]
            # By tenant and id: a team's or key's counter is its tenant's own (rules.counter_id).
            q = sa.select(u.c.tenant_id, col, sa.func.sum(u.c.cost_nanos)).where(
                u.c.currency == rule.currency, col.is_not(None)
            )
            if per.start is not None:
                q = q.where(u.c.started_at >= per.start)
            if rule.id != "*":
                q = q.where(col == rule.id)
            if isinstance(rule, AdminBudget):
                q = q.where(u.c.tenant_id == rule.tenant_id)  # it binds its own tenant only
            async with self.engine.connect() as conn:
                rows = (await conn.execute(q.group_by(u.c.tenant_id, col))).all()
            for tenant, ident, spent in rows:
                for spec in rules.budgets_for(rule.scope, ident, tenant):
                    if spec.period == rule.period and spec.currency == rule.currency:
                        items.append((spec.base + per.bucket, int(spent or 0), per.expire_ms))
        if not self.limiter.counters.shared:  # past the cap, team and key counters are read back as callers come
            items = self.limiter.bound.seeding(items)
        await self.limiter.counters.seed(items)

    async def seed_dropped(self, missing: list[tuple[BudgetSpec, Period]], tenant: str) -> None:
        """Read back the spend of `tenant`'s team or key budget counters the limiter dropped
        (budget_bound.py), or made none of yet since it dropped one: each counter from the stored usage of
        its period (0 with none), once this process's accepted rows are committed. As a seed, a counter
        made meanwhile wins."""
        from .tables import usage_calls as u

        assert self.engine is not None and self.writer is not None  # set in start, with them
        await self.writer.flush(timeout=5)
        column = {"team": u.c.team_id, "key": u.c.key_id}
        items: list[tuple[str, int, int]] = []
        async with self.engine.connect() as conn:
            for spec, per in missing:
                col = column[spec.scope]
                q = sa.select(sa.func.sum(u.c.cost_nanos)).where(
                    u.c.currency == spec.currency, u.c.tenant_id == tenant, col == spec.id
                )
                if per.start is not None:
                    q = q.where(u.c.started_at >= per.start)
                spent = (await conn.execute(q)).scalar()
                items.append((spec.base + per.bucket, int(spent or 0), per.expire_ms))
        await self.limiter.counters.seed(items)

    async def seed_rates(self, rules: Rules) -> None:
        """Start the current minute's rate counters from the usage rows started in it, so an empty
        Redis (or a restart) does not grant the minute's requests and tokens again.

        Calls refused before admission (`denied`) were never counted; every other row was (an `unserved`
        row's tokens only: its call's row is the request; but on its deployment's own limit, which counts
        the upstream calls made to it, it is one: Ticket.walked). Calls
        still in flight hold their own reservation (see Limiter._reseed). SET NX, as for budgets.
        """
        from .tables import usage_calls as u

        if self.engine is None:
            return
        scopes = {r.scope for r in self.cfg.rate_limits}
        column = {"tenant": u.c.tenant_id, "team": u.c.team_id, "key": u.c.key_id, "deployment": u.c.deployment}
        wid, _ = window(int(self.limiter.clock() * 1000))
        items: list[tuple[str, int, int]] = []
        for scope in sorted(scopes):
            col = column[scope]
            # A team's or key's counter is its tenant's own (rules.counter_id): by tenant and id. A deployment's
            # is every tenant's: its rows summed over tenants.
            by = (u.c.tenant_id, col) if scope in ("team", "key") else (col,)
            # An `unserved` row (an answer the call was billed for and did not serve) is the tokens of a
            # request counted on its call's own row; a deployment's requests are the upstream calls made to
            # it, and that answer was one.
            calls = (
                sa.func.count()
                if scope == "deployment"
                else sa.func.sum(sa.case((u.c.outcome == "unserved", 0), else_=1))
            )
            q = (
                sa.select(
                    *by,
                    calls,
                    sa.func.sum(u.c.prompt_tokens + u.c.completion_tokens),
                )
                .where(u.c.started_at >= _ts(wid * WINDOW_MS / 1000), u.c.outcome != "denied", col.is_not(None))
                .group_by(*by)
            )
            async with self.engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            for row in rows:
                *owner, ident, calls, tokens = row
                spec = rules.rate_for(scope, ident, owner[0] if owner else ident)
                if spec is not None and spec.rpm is not None:
                    items.append((window_key(spec, "r", wid), int(calls), window_expire_ms(wid)))
                if spec is not None and spec.tpm is not None:
                    items.append((window_key(spec, "t", wid), int(tokens or 0), window_expire_ms(wid)))
        await self.limiter.counters.seed(items)

    async def _reseed(self) -> None:
        """Redis came back empty: this period's budget counters and this minute's rate counters
        from stored usage, after this replica's own rows are in the database."""
        if self.engine is None:
            return  # nothing stored to seed from: the period's spend is lost (docs/metering.md)
        if self.writer is not None:
            await self.writer.flush(timeout=5)
        rules = self.limiter.rules
        await self.seed_budgets(list(rules.budget_rules), rules)
        await self.seed_rates(rules)


def spool_directory(cfg: SpoolConfig, storage_url: str | None) -> str | None:
    """Where this process's usage spool goes: `cfg.dir`, else beside a SQLite database file, else
    $XDG_STATE_HOME/multihome/usage-spool (~/.local/state/...). None: no spool (switched off, no
    storage, or an in-memory SQLite database, which dies with the process anyway)."""
    import os

    from sqlalchemy.engine import make_url

    if not cfg.enabled or storage_url is None:
        return None
    if cfg.dir is not None:
        return cfg.dir
    u = make_url(storage_url if "://" in storage_url else f"sqlite:///{storage_url}")
    if u.get_backend_name() == "sqlite":
        if u.database in (None, "", ":memory:") or u.query.get("mode") == "memory":
            return None
        return os.path.join(os.path.dirname(os.path.abspath(u.database or "")), "usage-spool")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "multihome", "usage-spool")


__all__ = ["Metering", "MeteredCall", "MeteredSink", "principal_key"]
