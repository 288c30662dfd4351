"""`ContractsService`: the metered-call sink, the group-commit writer and the burn-down source.

- `metered(m)` runs on the event loop for every metered call: it finds the agreements the call
  counts towards (an in-memory index) and appends one pending accrual per agreement. No I/O.
- A writer task commits pending accruals in batches (`batch_max`, or every `flush_interval_s`),
  one transaction per batch (`Ledger.apply`). A failed batch is put back at the head of the queue
  and retried with backoff; because the ledger is idempotent, a retry after an ambiguous failure
  never counts twice. Nothing is dropped; `close()` drains the queue.
- Durability promise: an accrual is on disk once `flush()` has returned, or within
  `flush_interval_s` (plus commit time) of the call; the client's answer does not wait for it.
  With metering's usage spool (the default with storage), a kill -9 loses none either: this
  service is the spool's holder (metering/record.py `SpoolHolder`), so a call's usage row stays in
  the spool until its accruals are committed too, and replay hands the rows back to `replayed`,
  which derives the same accruals (the ledger skips those already on record). Without the spool, a
  kill loses the accruals still queued: at most one flush interval of calls.
- A contract whose ledger rows cannot be read has its accruals kept in `ledger_held` (Ledger.apply_readable,
  same transaction), not in memory nor in the spool; this service remembers only its id, and moves them
  to the ledger once it can be read (docs/storage.md).
- `behind_plan(pool)` serves routing from memory; totals are refreshed from the ledger after each
  commit of this replica and every `refresh_s` for the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal

from ..aio import cancel_and_wait, wait_event
from ..config.contracts import Agreement, Commitment, ContractsConfig, agreements_of, field_problems
from ..metering import row
from ..metering.record import MeteredCall
from ..outage_log import OutageLog
from ..storage.rows import Unreadable
from . import money, terms
from .ledger import Ledger, Pending, Total

log = logging.getLogger("multihome.contracts")
UTC = dt.UTC
# At close (and in the flush before it), batches failing this long while every queued accrual's usage row is in
# the usage spool end the wait: the next start replays the rows and accrues them again, so waiting out an outage
# (the whole `timeout_s`) would lose nothing less.
_OUTAGE_S = 2.0


class AgreementConflict(ValueError):
    pass


class InvalidAgreement(ValueError):
    """What is wrong with an agreement to create; `field` the first problem's (the admin API's `param`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ContractsService:
    def __init__(self, cfg: ContractsConfig, url: str | None = None, *, engine=None, clock=time.time) -> None:
        self.cfg = cfg
        self.url = url
        self._engine = engine
        self._own_engine = engine is None
        self._clock = clock
        self.ledger: Ledger | None = None
        self._configured = agreements_of(cfg)
        self._stored: list[Agreement] = []
        self._index = terms.Index(self._configured)
        self._plans: dict[str, tuple[float, float, float]] = {}  # commitment id -> (start, end, amount)
        self._burned: dict[str, float] = {}
        self.totals: dict[str, Total] = {}
        # Stored rows (agreements, totals) the last refresh could not read: left out, listed by the admin API.
        self.unreadable: tuple[Unreadable, ...] = ()
        self._queue: deque[Pending] = deque()
        # Contracts whose ledger rows cannot be read (Ledger.apply_readable): their accruals are kept in the
        # database (ledger_held), not here nor in the usage spool, and moved to the ledger on a try after
        # `_held_until`, while every other contract's are written. Bounded by the number of contracts.
        self._held: set[str] = set()
        self._held_until = 0.0
        self._held_failures = 0
        self._held_rows: frozenset[tuple[str, str, str]] = frozenset()  # what was last logged as held
        self._wake = asyncio.Event()
        self._committed_evt = asyncio.Event()
        self.enqueued = 0
        self.committed = 0
        self.batches = 0
        self.write_errors = 0
        self._failing_since: float | None = None  # batches have failed since (None: the last one was written)
        self._last_error = ""
        self._unwritten = OutageLog(
            log, "contracts: accruals not written", recovered="contracts: accruals written again"
        )
        self._writer: asyncio.Task | None = None
        self._refresher: asyncio.Task | None = None
        self._closing = False
        self._inflight = 0  # the spool position of the batch being written (0: none, or not spooled)
        self.progress: Callable[[], None] | None = None  # metering: the spool may let rows go
        # metering/record.py MeteredSink: calls are wanted only with a ledger and an agreement to accrue
        # to (any call may match one); metering is told of every change (agreements come and go at runtime).
        self.listening = False
        self.listening_changed: Callable[[], None] | None = None
        self._set_agreements(self._configured)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._engine is None:
            if self.url is None:
                if self._configured:
                    raise RuntimeError("contracts need a database: set storage.url (or storage.url_env) in the config")
                return  # no storage, no contracts: a no-op sink
            from ..storage.engine import create_engine

            self._engine = create_engine(self.url)
        self.ledger = Ledger(self._engine)
        await self.refresh()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="contracts-writer")
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="contracts-refresh")

    async def close(self, timeout_s: float = 10.0) -> None:
        self._closing = True
        # Ended before the ledger and the engine close under it: a refresh mid-read gives its connection back.
        await cancel_and_wait(self._refresher)
        writer = self._writer
        if writer is not None:
            self._wake.set()
            deadline = time.monotonic() + timeout_s
            while not writer.done() and not self._outage():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait({writer}, timeout=min(0.5, left))
            if not writer.done():
                await cancel_and_wait(writer)  # a batch being written is put back in the queue
                why = self._last_error or f"not written within {timeout_s:g} s"
                if self._spooled():
                    log.warning(
                        "contracts: %d accruals not written before shutdown (%s); their calls' usage rows stay in "
                        "the usage spool, and the next start accrues them",
                        len(self._queue),
                        why,
                    )
                else:
                    log.error(
                        "contracts: %d accruals not written before shutdown (%s); they are lost", len(self._queue), why
                    )
        if self.ledger is not None:
            await self.ledger.close()
        if self._engine is not None and self._own_engine:
            await self._engine.dispose()

    # -- the sink (hot path) ---------------------------------------------------------------------
    def metered(self, m: MeteredCall) -> None:
        if self.ledger is None or not m.charged:
            return
        call = m.call
        if not self._index.matching(call.tenant, call.model_group, call.provider, m.currency, call.finished_at):
            return  # no agreement: the call's Decimal cost is never made (metering/record.py)
        self._accrue(
            call.request_id,
            call.tenant,
            call.model_group,
            call.provider,
            m.currency,
            call.finished_at,
            m.cost,
            m.price_version,
            m.spooled,
        )

    def replayed(self, rows: list[tuple]) -> None:
        """The accruals of usage rows a killed process left in the spool (metering/replay.py; row.py's
        tuples): the same ones `metered` made of them; those it had committed are skipped by the ledger."""
        if self.ledger is None:
            return
        for r in rows:
            cost = money.dec(r[row.COST])
            if cost > 0:
                self._accrue(
                    r[row.REQUEST_ID], r[row.TENANT], r[row.MODEL_GROUP], r[row.PROVIDER], r[row.CURRENCY],
                    row.finished_at(r), cost, r[row.PRICE_VERSION], 0,
                )  # fmt: skip

    def _accrue(
        self,
        request_id: str,
        tenant: str,
        model_group: str,
        provider: str | None,
        currency: str,
        finished_at: float,
        cost: Decimal,
        price_version: str,
        spooled: int,
    ) -> None:
        found = self._index.matching(tenant, model_group, provider, currency, finished_at)
        if not found:
            return
        at = dt.datetime.fromtimestamp(finished_at, UTC)
        for a in found:
            self._queue.append(
                Pending(
                    a.id,
                    request_id,
                    at,
                    cost,
                    terms.requested(a, cost),
                    terms.limit(a),
                    price_version[:64],
                    spooled,
                )
            )
        was_idle = len(self._queue) == len(found)
        self.enqueued += len(found)
        if was_idle or len(self._queue) >= self.cfg.batch_max:
            self._wake.set()  # an idle writer must not wait for a full batch

    async def flush(self, timeout_s: float = 30.0, *, stopping: bool = False) -> None:
        """Return once every accrual enqueued before the call is committed (TimeoutError if not; `stopping`:
        also as soon as batches have been failing for _OUTAGE_S with every queued row in the usage spool)."""
        target = self.enqueued
        deadline = time.monotonic() + timeout_s
        while self.committed < target:
            if self._writer is None or self._writer.done():
                raise RuntimeError("the contracts writer is not running")
            self._wake.set()
            self._committed_evt.clear()
            left = deadline - time.monotonic()
            if left <= 0 or (stopping and self._outage()):
                raise TimeoutError(f"{target - self.committed} accruals not yet committed ({self._last_error})")
            await wait_event(self._committed_evt, min(left, 1.0))

    async def _write_loop(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                if self._held:  # tried again when due, even if no call comes
                    await wait_event(self._wake, max(0.0, self._held_until - time.monotonic()))
                    if not self._queue and not self._held_due():
                        continue
                else:
                    await self._wake.wait()
            if len(self._queue) < self.cfg.batch_max and not self._closing:
                # Group commit: let more calls join the batch, up to the flush interval. A wake-up
                # from before (the first accrual, or one that arrived while the last batch was
                # being written) must not cut the window short: only a full batch or flush() does.
                self._wake.clear()
                await wait_event(self._wake, self.cfg.flush_interval_s)
                self._wake.clear()
            n = min(len(self._queue), self.cfg.batch_max)
            batch = [self._queue.popleft() for _ in range(n)]
            # Held contracts when due, and always those this batch accrues to: their held accruals are
            # older, so they go first (a cap clips the later ones).
            retried = []
            if self._held:
                retried = sorted(
                    self._held if self._held_due() else self._held.intersection(p.contract_id for p in batch)
                )
            self._inflight = min((p.spooled for p in batch if p.spooled), default=0)
            try:
                changed, held = await self._open_ledger().apply_readable(batch, retried)
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))
                self._inflight = 0
                raise
            except Exception as exc:  # keep the batch; the ledger makes the retry idempotent
                self._queue.extendleft(reversed(batch))
                self._inflight = 0
                self.write_errors += 1
                self._unwritten.failed(exc)
                self._last_error = self._unwritten.last_error
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                failures += 1
                delay = min(0.05 * 2 ** min(failures, 6), 2.0)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._failing_since = None
            self._unwritten.ok()
            self._inflight = 0
            self._hold(retried, held)
            self.batches += 1
            self.committed += len(batch)  # a held one too: it is in ledger_held, on disk
            self._apply_totals(changed)
            self._committed_evt.set()
            if self.progress is not None:
                self.progress()

    def _spooled(self) -> bool:
        """Every queued accrual's usage row is held in the usage spool (so replayed, and accrued again, at the
        next start)."""
        return all(p.spooled for p in self._queue)

    def _outage(self) -> bool:
        """Batches have been failing for _OUTAGE_S, and giving up loses nothing (`_spooled`)."""
        since = self._failing_since
        return since is not None and time.monotonic() - since >= _OUTAGE_S and self._spooled()

    def _held_due(self) -> bool:
        return bool(self._held) and time.monotonic() >= self._held_until

    def _hold(self, retried: list[str], held: list[tuple[str, Unreadable]]) -> None:
        """Note which contracts have accruals held (in ledger_held) after a batch that tried `retried`;
        tried again with a backoff up to a minute: never lost, never spinning. Logged when it changes."""
        rows = frozenset((u.table, u.id, u.problem) for _, u in held)
        if rows != self._held_rows:
            self._held_rows = rows
            for cid, u in held:
                log.error(
                    "contracts: the ledger of contract %s cannot be read (%s); its accruals are kept in "
                    "ledger_held and written once the row is fixed by SQL (docs/storage.md), every other "
                    "contract's are written",
                    cid,
                    u.describe(),
                )
        if retried:
            self._held.difference_update(retried)
        if not held:
            if retried:
                self._held_failures = 0
            return
        self._held.update(cid for cid, _ in held)
        self._held_failures += 1
        self._held_until = time.monotonic() + min(0.5 * 2 ** min(self._held_failures, 7), 60.0)

    def held_from(self) -> int | None:
        """metering.record.SpoolHolder: the spool position of the oldest accrual not yet committed.
        Positions grow along the queue; held accruals are committed (to ledger_held), so they hold no
        spool row; replayed accruals (0) are covered by replay's flush instead."""
        if self._inflight:
            return self._inflight
        return self._first_queued()

    def _first_queued(self) -> int | None:
        for p in self._queue:
            if p.spooled:
                return p.spooled
        return None

    def _open_ledger(self) -> Ledger:
        if self.ledger is None:  # the admin API answers 501 before getting here
            raise RuntimeError("the contracts ledger is not open: no storage, or start() not called")
        return self.ledger

    # -- agreements and totals -------------------------------------------------------------------
    def agreements(self) -> list[Agreement]:
        return list(self._index.by_id.values())

    def agreement(self, contract_id: str) -> Agreement | None:
        return self._index.by_id.get(contract_id)

    async def create_agreement(self, a: Agreement, *, actor: str) -> Agreement:
        errs = field_problems(a)
        if errs:
            raise InvalidAgreement(errs[0].field, "; ".join(p.message for p in errs))
        if a.id in self._index.by_id:
            raise AgreementConflict(f"a contract with id {a.id!r} already exists")
        from sqlalchemy.exc import IntegrityError

        try:
            await self._open_ledger().create_agreement(a, actor=actor)
        except IntegrityError:
            raise AgreementConflict(f"a contract with id {a.id!r} already exists") from None
        await self.refresh()
        return a

    async def refresh(self) -> None:
        """Re-read stored agreements and every contract's ledger totals; rows that cannot be read are left
        out (a contract stored with an unreadable agreement accrues nothing until fixed) and reported."""
        stored, totals, bad, held = await self._open_ledger().state()
        if held - self._held:  # another replica's, or a process's before a restart: tried here too
            self._held |= held
            self._held_until = min(self._held_until, time.monotonic())
            self._wake.set()
        config_ids = {a.id for a in self._configured}
        self._stored = [a for a in stored if a.id not in config_ids]  # config wins; the API refuses clashes
        self._set_agreements([*self._configured, *self._stored])
        self._apply_totals(totals)
        unreadable = (*stored.unreadable, *bad)
        if unreadable != self.unreadable:
            self.unreadable = unreadable
            for u in unreadable:  # once per change, not per refresh
                log.error("contracts: stored row left out until fixed by SQL: %s", u.describe())

    def unreadable_agreement(self, contract_id: str) -> Unreadable | None:
        return next((u for u in self.unreadable if u.table == "contract_agreements" and u.id == contract_id), None)

    async def _refresh_loop(self) -> None:
        failing = OutageLog(
            log, "contracts: refresh failed (the last totals are served)", recovered="contracts: refreshed again"
        )
        while True:
            await asyncio.sleep(self.cfg.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:
                failing.failed(exc)
            else:
                failing.ok()

    def _set_agreements(self, agreements: list[Agreement]) -> None:
        self._index = terms.Index(agreements)
        self._plans = {a.id: (*terms.period_ts(a), float(a.amount)) for a in agreements if isinstance(a, Commitment)}
        listening = self.ledger is not None and bool(self._index.by_id)
        if listening != self.listening:
            self.listening = listening
            if self.listening_changed is not None:
                self.listening_changed()

    def _apply_totals(self, totals: dict[str, Total]) -> None:
        for cid, t in totals.items():
            cur = self.totals.get(cid)
            if cur is None or t.calls >= cur.calls:  # never step back to an older reading
                self.totals[cid] = t
                self._burned[cid] = float(t.accrued)

    # -- routing.commitments.CommitmentSource ----------------------------------------------------
    def behind_plan(self, pool: str) -> float:
        """(planned burn to now - actual burn) / commitment amount; 0.0 for an unknown pool, and for one
        outside its period: before it nothing is planned, after it a call's spend no longer burns it (an
        ended commitment left behind plan would otherwise be preferred for ever)."""
        plan = self._plans.get(pool)
        if plan is None:
            return 0.0
        start, end, amount = plan
        now = self._clock()
        if not start <= now < end:
            return 0.0
        return (now - start) / (end - start) - self._burned.get(pool, 0.0) / amount

    def accrued(self, contract_id: str) -> Decimal:
        t = self.totals.get(contract_id)
        return t.accrued if t is not None else Decimal(0)
