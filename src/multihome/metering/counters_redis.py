"""The same counters in Redis, for every replica: one Lua script call per event-loop tick.

Every admission of one loop iteration goes out in a single EVALSHA (one round trip, one reply).
The script (counters_lua) is atomic, so two replicas can never both take the last unit of a
budget or a rate window. Each admission's numbers travel as one comma-separated string: the
client packs a handful of arguments per call instead of dozens, which is most of the client's
CPU cost.

Two promises of docs/metering.md are kept here:
- **An empty Redis keeps the period's spend.** The script answers 0 when the counters are not of
  the epoch this process counts in; the process then re-seeds them from stored usage (`reseed`,
  SET NX, so replicas re-seeding at once do not add up) and claims the epoch before it admits.
- **A stalled Redis costs each admission at most `timeout_s`**, measured from when it asked: a
  watchdog fails it then, and while a call to Redis is overdue new admissions fall back at once
  instead of queueing behind it. An admission that reaches Redis after its deadline is not
  applied, and a settlement batch sent again after a timeout is applied once. A call whose reply
  was lost is sent again (same number) until Redis answers, and what it applied is settled
  (`_resolve`); a node demoted by a failover (READONLY) makes the sender reconnect.

With leases (counters_lease, on unless `leases=False`), an admission covered by this process's
leases is admitted without a script call, also while Redis stalls; the script grants and tops up
the leases, and `drain`/`close` give them back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import ClassVar, Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, NoScriptError, ReadOnlyError, ResponseError

from ..aio import cancel_and_wait, wait_event
from ..outage_log import OutageLog
from ..storage.redis_client import connect
from . import redis_eviction
from .counters import BUDGET, DEPLOYMENT, OK, RATE, Outcome, Plan
from .counters_lease import Leases
from .counters_lua import ADMIT, CLAIM, EXPIRED, SEED

log = logging.getLogger("multihome.metering")
_BATCH = 256  # admissions per script call: bounds how long one call holds Redis
SETTLE_DELAY_S = 0.02  # how long a settlement waits for admissions to ride along with
LEASE_IDLE_S = 1.0  # a lease nothing took from for this long (up to twice) is given back


class CountersUnavailable(Exception):
    """Redis did not answer an admission in time, or the counters could not be re-seeded."""


class RedisCounters:
    shared: ClassVar[Literal[True]] = True

    def __init__(
        self, url: str, timeout_s: float = 2.0, prefix: str = "mh:", leases: bool = True, allow_eviction: bool = False
    ) -> None:
        # A Redis that stops answering fails admissions after timeout_s (fail_open decides what then).
        self.timeout_s = timeout_s
        self.allow_eviction = allow_eviction  # metering.redis_allow_eviction (redis_eviction.py)
        self._timeout_ms = int(timeout_s * 1000)
        self.redis = connect(
            url, max_connections=32, blocking=False, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._admit_sha = self.redis.register_script(ADMIT).sha
        self._epoch_key = prefix + "epoch"
        # This process's last applied call: its number, reply and settlement batch (counters_lua).
        self._seq_key = f"{prefix}s:{secrets.token_hex(8)}"
        self._calls = 0  # script calls numbered: one sent again on a new connection keeps its number
        self.epoch: str | None = None  # the token of the counters this process counts in (None: unknown)
        # Bumped when the counters were found empty: reservations made before it are not in them.
        self.generation = 0
        self.reseed: Callable[[], Awaitable[None]] | None = None  # set by the Limiter
        # The sender task owns one connection and talks to it directly: no pool checkout, retry
        # wrapper or instrumentation per call, which cost a third of each round trip.
        self._conn = None
        self._offset_ms = 0  # this process's clock minus Redis's, measured on each new connection
        # Admissions as [keys, spec, future, deadline on the loop clock]: queued, and in flight.
        self._queue: list[list] = []
        self._inflight: list[list] = []
        self._pending: dict[str, int] = {}  # settlement deltas not yet sent
        # Counters of `_pending` the script makes if they do not exist (`adjust`): key -> expire_at_ms.
        self._made: dict[str, int] = {}
        # The settlement batch being sent, and its counters to make: sent again as it is (same seq) until
        # Redis confirms it.
        self._settling: tuple[int, list[tuple[str, int]], dict[str, int]] | None = None
        self._unsettled = OutageLog(
            log, "could not settle counters in Redis", recovered="counters settled in Redis again"
        )
        self._seq = 0
        self._sender: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._settle_timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._overdue = False  # an admission outlived its deadline: fall back at once until Redis answers
        self._resync_after = 0.0  # after a failed re-seed, admissions fall back at once until then
        self._closing = False
        self._close_by = 0.0  # while closing, failed settlement calls are sent again until then (loop clock)
        self.leases = Leases() if leases else None
        self._lease_wid = 0  # the minute leases were last pruned in
        self.script_calls = 0  # EVALSHA calls made (admissions, settlements, top-ups): for tests and benches
        self._reaper: asyncio.TimerHandle | None = None  # gives idle leases back (LEASE_IDLE_S)

    def admit_now(self, plan: Plan, now_ms: int) -> Outcome | None:
        """The admission when it needs no round trip: nothing to count, or this process's leases cover it
        (also while Redis stalls); else None, nothing changed, for `admit`. Costs no coroutine."""
        if not (plan.budgets or plan.rates or plan.groups):
            return Outcome(OK, -1, [])
        leases = self.leases
        if leases is None:
            return None
        if now_ms // 60_000 != self._lease_wid:
            self._lease_wid = now_ms // 60_000
            leases.prune(now_ms)
        values = leases.take(plan, self._pending)
        if values is None:
            return None
        if leases.due and self._sender is None:
            self._kick()  # topped up in the background: a steady load never waits for Redis
        elif self._pending:  # (a running sender takes both with its next call)
            self._schedule()
        return Outcome(OK, 0 if plan.groups else -1, values, self.generation)

    def admit_usual(
        self,
        budget: str,
        budget_limit: int,
        reserve: int,
        requests: str,
        rpm: int,
        tokens: str,
        tpm: int,
        est: int,
        now_ms: int,
    ) -> tuple[int, int, int] | None:
        """`admit_now` of the usual shape (Leases.take_usual): the counters' values, or None (nothing
        changed) when the leases do not cover it; the Limiter's usual admission on shared counters."""
        leases = self.leases
        if leases is None:
            return None
        if now_ms // 60_000 != self._lease_wid:
            self._lease_wid = now_ms // 60_000
            leases.prune(now_ms)
        values = leases.take_usual(budget, budget_limit, reserve, requests, rpm, tokens, tpm, est)
        if values is None:
            return None
        if leases.due and self._sender is None:
            self._kick()
        elif self._pending:
            self._schedule()
        return values

    async def admit(self, plan: Plan, now_ms: int) -> Outcome:
        """Queue the admission; every admission of one loop iteration goes out in one script call."""
        outcome = self.admit_now(plan, now_ms)
        if outcome is not None:
            return outcome
        loop = asyncio.get_running_loop()
        if self._overdue:
            # Redis let an admission pass its deadline: this one would only wait behind that call.
            # The sender keeps trying Redis in the background; its first answer ends this.
            raise CountersUnavailable(f"Redis has not answered within {self.timeout_s:g} s")
        if self.epoch is None and loop.time() < self._resync_after:
            raise CountersUnavailable("the counters are being re-seeded from stored usage")
        keys: list[str] = []
        args: list[int] = [
            int(time.time() * 1000) + self._timeout_ms,
            len(plan.budgets),
            len(plan.rates),
            len(plan.groups),
            plan.rate_expire_ms,
        ]
        # Per counter (key, limit, increment, expire_at_ms, soft, lease asked for), budgets and rates, then
        # per group: what the sender hands the script's grants to (counters_lease).
        asks: list[tuple[str, int, int, int, bool, int]] = []
        group_asks: list[list[tuple[str, int, int, int, bool, int]]] = []
        pending = self._pending
        leases = self.leases
        ask = leases.ask if leases is not None else _no_lease
        rexp = plan.rate_expire_ms
        for key, limit, reserve, hard, expire in plan.budgets:
            keys.append(key)
            want = ask(key, limit, reserve, expire, not hard, pending)
            asks.append((key, limit, reserve, expire, not hard, want))
            args += (limit, reserve, 1 if hard else 0, expire, want)
        for key, limit, incr in plan.rates:
            keys.append(key)
            want = ask(key, limit, incr, rexp, False, pending)
            asks.append((key, limit, incr, rexp, False, want))
            args += (limit, incr, want)
        for counters in plan.groups:
            args.append(len(counters))
            g = []
            for key, limit, incr in counters:
                keys.append(key)
                want = ask(key, limit, incr, rexp, False, pending)
                g.append((key, limit, incr, rexp, False, want))
                args += (limit, incr, want)
            group_asks.append(g)
        future = loop.create_future()
        deadline = loop.time() + self.timeout_s
        entry = [keys, ",".join(map(str, args)), future, deadline, asks, group_asks]
        self._queue.append(entry)
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._expire)
        self._kick()
        try:
            gen, out = await future
        except asyncio.CancelledError:
            # Cancelled (a client's hang-up: api/head_limit.py) after the reply was set and before this
            # resumed: the sender saw a caller waiting and gave nothing back, and nobody settles it.
            if future.done() and not future.cancelled() and future.exception() is None:
                self._unreserve(entry, future.result()[1])
            raise
        code = int(out[0])
        if code == OK:
            n = (len(out) - 2) // 2  # values, then the grants (the sender's)
            return Outcome(OK, int(out[1]), [int(v) for v in out[2 : 2 + n]], gen)
        if code == EXPIRED:
            raise CountersUnavailable("the admission reached Redis after its deadline")
        assert code in (BUDGET, RATE, DEPLOYMENT)
        return Outcome(code, int(out[1]), [int(out[2])], gen)

    def _expire(self) -> None:
        """Watchdog: fail every admission past its deadline; then, while Redis is overdue, the
        queued ones too (they would only wait behind the call in flight)."""
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = CountersUnavailable(f"Redis did not answer within {self.timeout_s:g} s")
        nxt = None
        for entries in (self._inflight, self._queue):
            for entry in entries:
                future = entry[2]
                if future.done():
                    continue
                if entry[3] <= now or (self._overdue and entries is self._queue):
                    future.set_exception(late)
                    self._overdue = True
                elif nxt is None or entry[3] < nxt:
                    nxt = entry[3]
        self._drop_given_up()
        if nxt is not None:
            self._watchdog = loop.call_at(nxt, self._expire)
        if self._overdue:
            self._kick()  # the sender probes Redis until it answers

    def adjust2(self, key1: str, delta1: int, key2: str, delta2: int) -> None:
        """`adjust` of two deltas (LocalCounters.adjust2's signature; Ticket.settle's usual shape), written
        out: no tuples, no loop."""
        pending = self._pending
        leases = self.leases
        if delta1:
            if leases is not None:
                delta1 = leases.settle(key1, delta1)  # a reservation given back stays with the lease
            if delta1:
                pending[key1] = pending.get(key1, 0) + delta1
        if delta2:
            if leases is not None:
                delta2 = leases.settle(key2, delta2)
            if delta2:
                pending[key2] = pending.get(key2, 0) + delta2
        self._schedule()

    def adjust(self, deltas: Iterable[tuple[str, int]], made: Mapping[str, int] | None = None) -> None:
        """Settle: deltas are merged per counter and ride along with the next admissions' script
        call, or go on their own after SETTLE_DELAY_S when no admission comes (nobody waits on them).
        A counter named in `made` (key -> expire_at_ms) is made by the script if it does not exist (with
        that expiry, unless past), where a settlement otherwise lands only on a counter that exists."""
        if made:
            self._made.update(made)
        pending = self._pending
        leases = self.leases
        for key, delta in deltas:
            if delta and leases is not None:
                delta = leases.settle(key, delta)  # a reservation given back stays with the lease
            if delta:  # a counter the call used exactly what it reserved of
                pending[key] = pending.get(key, 0) + delta
        self._schedule()

    def _schedule(self) -> None:
        """Settlements and top-ups go with the sender's next call, or on their own after SETTLE_DELAY_S."""
        if self._settle_timer is None and self._sender is None and (self._pending or (self.leases and self.leases.due)):
            self._settle_timer = asyncio.get_running_loop().call_later(SETTLE_DELAY_S, self._settle_due)

    def _settle_due(self) -> None:
        self._settle_timer = None
        if self._pending or (self.leases is not None and self.leases.due):
            self._kick()

    def _kick(self) -> None:
        self._wake.set()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        backoff = 0.05
        try:
            await asyncio.sleep(0)  # gather this loop iteration's admissions and settlements
            while True:
                self._wake.clear()
                # Whatever queues while a call is in flight goes in the next call (group commit).
                self._drop_given_up()  # those the watchdog failed, or whose caller was cancelled
                batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
                if self._settling is None and self._pending:
                    settle = [(k, d) for k, d in self._pending.items() if d]
                    made = self._made
                    if made:  # only a counter that gains: none is made to hold a give-back
                        made = {k: made[k] for k, d in settle if d > 0 and k in made}
                        self._made = {}
                    self._pending = {}
                    if settle:
                        self._seq += 1
                        self._settling = (self._seq, settle, made)
                tops = self.leases.topups() if self.leases is not None and self.epoch is not None else []
                if not batch and self._settling is None and not tops and not self._overdue:
                    break  # (while overdue, an empty call probes Redis)
                keys = [self._epoch_key, self._seq_key]
                settle_arg = ""
                if self._settling is not None:
                    seq, settle, made = self._settling
                    keys += [k for k, _ in settle]
                    if made:  # "delta@expire_at_ms": made if it does not exist (counters_lua)
                        settle_arg = f"{seq}," + ",".join(f"{d}@{made[k]}" if k in made else str(d) for k, d in settle)
                    else:
                        settle_arg = f"{seq}," + ",".join(str(d) for _, d in settle)
                tops_arg = ""
                if tops:
                    keys += [k for k, _ in tops]
                    tops_arg = ",".join(
                        [str(int(time.time() * 1000) + self._timeout_ms)]
                        + [f"{e.limit},{e.want},{e.incr}" for _, e in tops]
                    )
                for entry in batch:
                    keys += entry[0]
                then = self.leases.snapshot(keys) if self.leases is not None else {}
                self._calls += 1
                args = [self.epoch or "", "", str(self._calls), settle_arg, tops_arg, *(entry[1] for entry in batch)]
                self._inflight = batch
                try:
                    self.script_calls += 1
                    replies = await self._call(keys, args)
                    if not isinstance(replies, list):  # counters not of our epoch: re-seed, then again
                        await self._resync()  # the batch stays in flight for the watchdog meanwhile
                        self._inflight = []
                        self._queue[:0] = batch
                        continue
                except Exception as exc:  # unreachable, timeout, script error, re-seed failed
                    self._inflight = []
                    if isinstance(exc, ResponseError):
                        self._overdue = False  # Redis answers (with an error): not a stall
                    for entry in batch:
                        if not entry[2].done():
                            entry[2].set_exception(exc)
                    if (batch or tops) and _maybe_ran(exc):
                        await self._resolve(keys, args, tops, then, batch)
                    else:
                        self._lease_failed(tops, batch)
                    left = self._close_by - asyncio.get_running_loop().time() if self._closing else 0.0
                    if self._closing and ((self._settling is None and not self._pending) or left <= 0):
                        return  # close() logs what was not written
                    if self._settling is not None:
                        # Sent again as it is (same seq, so it applies once): a lost settlement would
                        # leave a reservation counted forever. Also while closing (until its deadline):
                        # a lease not given back stays counted until its window or period ends.
                        self._unsettled.failed(exc)
                    if self._closing:
                        await wait_event(self._wake, min(backoff, left))
                        backoff = min(backoff * 2, 2.0)
                        continue
                    if self._settling is not None or self.epoch is None or self._overdue:
                        if not self._queue:  # an admission arriving meanwhile is tried at once
                            await wait_event(self._wake, backoff)
                        backoff = min(backoff * 2, 2.0)
                    continue
                self._inflight = []
                self._overdue = False
                if self._settling is not None:
                    self._unsettled.ok()
                self._settling = None
                backoff = 0.05
                gen = self.generation
                if self.leases is not None:
                    self._leased(tops, then, replies[0], batch, replies[1:])
                for entry, reply in zip(batch, replies[1:]):
                    if not entry[2].done():
                        entry[2].set_result((gen, reply))
                    else:  # its caller got the fallback (its deadline passed as the reply came) or left
                        self._unreserve(entry, reply)
        finally:
            self._sender = None

    async def _resolve(self, keys: list[str], args: list[str], tops, then: dict, batch: list[list]) -> None:
        """A call whose reply was lost (a timeout, or its connection died again on the retry) may have run:
        its reservations and grants would stay counted until their window or period ends, while its
        callers got the fallback. It is sent again as it was, on a new connection (same number: Redis
        answers the first run's reply and applies nothing; if the first never ran, this one runs, its
        admissions past their deadline and its top-ups' too, or given back below), until an answer
        (or close's deadline). What the answer says was applied is settled: grants go to the leases,
        the admissions' reservations are given back (their callers got the fallback, which settles
        nothing)."""
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            self._wake.clear()
            try:
                self.script_calls += 1
                replies = await self._call(keys, args)
                break
            except Exception as exc:
                left = self._close_by - loop.time() if self._closing else 2.0
                if not _maybe_ran(exc) or left <= 0:
                    self._lease_failed(tops, batch)  # close() logs what stays counted
                    return
                # Admissions queued meanwhile get what their call would have got (as from the sender's
                # loop); one arriving later wakes the next try.
                for entry in self._queue:
                    if not entry[2].done():
                        entry[2].set_exception(exc)
                self._drop_given_up()
            await wait_event(self._wake, min(backoff, left))
            backoff = min(backoff * 2, 2.0)
        self._overdue = False
        if not isinstance(replies, list):  # not our epoch: it applied nothing (the next call re-seeds)
            self._lease_failed(tops, batch)
            return
        self._settling = None  # the call carried it: applied once
        if self.leases is not None:
            self._leased(tops, then, replies[0], batch, replies[1:])
        for entry, reply in zip(batch, replies[1:]):
            self._unreserve(entry, reply)

    def _unreserve(self, entry: list, reply: list) -> None:
        """Give back what Redis reserved for an admission whose caller stopped waiting (nobody settles it)."""
        if int(reply[0]) != OK:
            return  # refused or expired: nothing applied
        chosen = int(reply[1])
        counted = entry[4] + (entry[5][chosen] if chosen >= 0 else [])
        self.adjust([(key, -incr) for key, _, incr, *_ in counted])

    def _leased(self, tops, then: dict, topped: list, batch: list[list], replies: list) -> None:
        """Hand the script's grants to the leases: top-ups, then each admission's (even one whose
        caller gave up waiting: Redis counted its grant)."""
        leases = self.leases
        assert leases is not None
        if self._reaper is None and not self._closing:
            self._reaper = asyncio.get_running_loop().call_later(LEASE_IDLE_S, self._reap)
        for i, (key, e) in enumerate(tops):
            leases.topped_up(key, e, int(topped[2 * i]), int(topped[2 * i + 1]), then)
        for entry, reply in zip(batch, replies):
            asks, group_asks = entry[4], entry[5]
            if int(reply[0]) != OK:
                for key, *_, want in [*asks, *(a for g in group_asks for a in g)]:
                    if want:
                        leases.failed(key)
                continue
            chosen = int(reply[1])
            counted = asks + (group_asks[chosen] if chosen >= 0 else [])
            n = len(counted)
            for i, (key, limit, incr, expire, soft, want) in enumerate(counted):
                value, grant = int(reply[2 + i]), int(reply[2 + n + i])
                leases.answered(key, limit, incr, expire, soft, value, grant, bool(want), then)
            for g, asked in enumerate(group_asks):
                if g != chosen:
                    for key, *_, want in asked:
                        if want:
                            leases.failed(key)

    def _reap(self) -> None:
        """Give back the leases nothing took from since the last turn; again in LEASE_IDLE_S while any are held."""
        self._reaper = None
        leases = self.leases
        if leases is None or self._closing:
            return
        pending = self._pending
        for key, delta in leases.idle():
            pending[key] = pending.get(key, 0) + delta
        self._schedule()
        if any(e.left for e in leases.by_key.values()):  # else the next grant starts it again
            self._reaper = asyncio.get_running_loop().call_later(LEASE_IDLE_S, self._reap)

    def _drop_given_up(self) -> None:
        """Forget the queued admissions nobody waits for any more: never sent, so the leases they asked
        for are asked for again later (no answer would clear their asking)."""
        queue = self._queue
        for entry in queue:
            if entry[2].done():
                break
        else:
            return  # (the usual case: no list made)
        self._queue = [e for e in queue if not e[2].done()]
        self._lease_failed((), [e for e in queue if e[2].done()])

    def _lease_failed(self, tops, batch: list[list]) -> None:
        """A call that failed: its grants are asked for again later."""
        if self.leases is None:
            return
        for key, _ in tops:
            self.leases.failed(key)
        for entry in batch:
            for key, *_, want in [*entry[4], *(a for g in entry[5] for a in g)]:
                if want:
                    self.leases.failed(key)

    async def _resync(self) -> None:
        """The counters are not the ones this process counted in (Redis came back empty, or another
        replica re-seeded them): seed them from stored usage, then count in the epoch in force."""
        if self.epoch is not None:
            log.warning("budget and rate counters in Redis were reset; re-seeding them from stored usage")
            # Reservations and settlements so far were made against counters that are gone: tickets
            # of the old generation now settle their whole cost (Ticket.settle), and deltas not yet
            # sent are dropped (their calls' usage rows are in the seed).
            self.generation += 1
            self.epoch = None
            self._pending, self._settling, self._made = {}, None, {}
            if self.leases is not None:
                self.leases.drop()  # the re-seeded counters do not hold them
        try:
            if self.reseed is not None:
                await self.reseed()
            await self.claim()
        except Exception as exc:
            self._resync_after = asyncio.get_running_loop().time() + 1.0
            raise CountersUnavailable(f"the counters could not be re-seeded ({type(exc).__name__})") from exc

    async def _call(self, keys: list[str], args: list[str]) -> list | int:
        load = False
        for attempt in (0, 1, 2):
            conn = self._conn
            try:
                if conn is None:
                    conn = self._conn = self.redis.connection_pool.make_connection()
                    await conn.connect()
                    await self._measure_offset(conn)
                if load:
                    await conn.send_command("SCRIPT", "LOAD", ADMIT)
                    await conn.read_response()
                args[1] = str(self._offset_ms)
                await conn.send_command("EVALSHA", self._admit_sha, len(keys), *keys, *args)
                return await conn.read_response()
            except NoScriptError:  # Redis restarted (or was flushed) and lost the script
                if attempt == 2:
                    raise
                load = True
            except (ReadOnlyError, MasterDownError):
                # The connection reaches a replica: a failover demoted its node (a managed Redis moves
                # the name to the new primary, an open connection stays with the old node). Nothing
                # was applied (a replica writes nothing); sent again once on a new connection, which
                # resolves the name afresh. Still a replica: the call fails, the next one reconnects.
                self._conn = None
                if conn is not None:
                    await conn.disconnect()
                if attempt:
                    raise
            except ResponseError:
                raise  # any other error reply: the connection is still in step
            except BaseException as exc:
                self._conn = None  # unknown state (timeout, cancelled mid-reply): start a new connection
                if conn is not None:
                    await conn.disconnect()
                # A connection found dead (Redis restarted, idle connection dropped) is retried once
                # on a new one, with the same call number: if Redis had run the call before the
                # connection died, it answers the first run's reply and applies nothing (counters_lua).
                if attempt or not isinstance(exc, RedisConnectionError):
                    raise
        raise AssertionError("unreachable")

    async def _measure_offset(self, conn) -> None:
        """This process's clock minus Redis's (admission deadlines are checked on Redis's clock)."""
        before = time.time()
        await conn.send_command("TIME")
        seconds, micros = await conn.read_response()
        after = time.time()
        self._offset_ms = round((before + after) * 500 - int(seconds) * 1000 - int(micros) / 1000)

    async def drain(self, timeout: float = 5) -> None:
        """Give this process's leases back, send queued settlements now and wait until they reached
        Redis (or the sender gave up)."""
        for _ in range(3):  # a grant answered meanwhile (a top-up in flight) is given back in the next round
            if self.leases is not None:
                self.leases.no_topups()
                for key, delta in self.leases.give_back():
                    self._pending[key] = self._pending.get(key, 0) + delta
            if self._settle_timer is not None:
                self._settle_timer.cancel()
                self._settle_timer = None
            if (self._pending or self._settling) and self._sender is None:
                self._kick()
            while self._sender is not None:
                done, _ = await asyncio.wait([self._sender], timeout=timeout)
                if not done:
                    return
            if self.leases is None or not any(e.left for e in self.leases.by_key.values()):
                return

    def _log_unwritten(self) -> None:
        """Name the counters whose settlements or leases did not reach Redis by close, with the amounts
        (counter names hold ids, never secrets): a lease or reservation not given back stays counted
        until its window or period ends; a cost not added is missing from the counter."""
        unwritten: dict[str, int] = {}
        for key, delta in [*(self._settling[1] if self._settling else ()), *self._pending.items()]:
            unwritten[key] = unwritten.get(key, 0) + delta
        if self.leases is not None:
            for key, e in self.leases.by_key.items():
                if e.left:
                    unwritten[key] = unwritten.get(key, 0) - e.left
        back = sorted(k for k, d in unwritten.items() if d < 0)
        owed = sorted(k for k, d in unwritten.items() if d > 0)
        if back or owed:
            log.error(
                "closing with budget/rate counters not written to Redis: %d held too much (leases or "
                "reservations not given back, counted until their window or period ends) %s; %d miss "
                "their calls' cost %s",
                len(back),
                _names(back, unwritten),
                len(owed),
                _names(owed, unwritten),
            )

    async def seed(self, items: list[tuple[str, int, int]]) -> None:
        """Set each (key, value, expire_at_ms) that does not exist yet: a running counter wins."""
        for i in range(0, len(items), 500):
            chunk = items[i : i + 500]
            # EVAL, not EVALSHA: rare calls, and a pooled connection that met a demoted node (a failover)
            # reconnects to a primary that may not have the script cached.
            args = [v for _, value, exp in chunk for v in (value, exp)]
            await self.redis.eval(SEED, len(chunk), *(k for k, _, _ in chunk), *args)

    async def claim(self) -> None:
        """Count in the epoch in force: the one set by whoever seeded the counters first, else ours
        (call after seeding them)."""
        token = await self.redis.eval(CLAIM, 1, self._epoch_key, secrets.token_hex(8))  # (EVAL: as seed)
        self.epoch = token.decode() if isinstance(token, bytes) else token

    async def read(self, keys: list[str], now_ms: int) -> list[int]:
        if not keys:
            return []
        values = [int(v) if v is not None else 0 for v in await self.redis.mget(keys)]
        if self.leases is None:
            return values
        # Less this process's unused leases (in the counter, not spent); other replicas' are in it.
        return [max(0, v - self.leases.held(k)) if v else v for k, v in zip(keys, values)]

    async def start(self) -> None:
        await self.redis.script_load(ADMIT)  # so the first admission need not; also proves Redis answers
        await redis_eviction.check(self.redis, self.allow_eviction)  # refuses a Redis that may evict counters

    async def close(self, timeout: float = 5) -> None:
        """Give the leases back and send the settlements left; a call that fails is sent again (it
        applies once) until `timeout` is up. What could not be written then is logged."""
        self._closing = True
        self._close_by = asyncio.get_running_loop().time() + timeout
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
        await self.drain(timeout)
        self._log_unwritten()
        await cancel_and_wait(self._sender)  # still probing an unanswering Redis
        if self._conn is not None:
            await self._conn.disconnect()
        await self.redis.aclose()


def _names(keys: list[str], deltas: dict[str, int], most: int = 20) -> str:
    shown = ", ".join(f"{k} ({deltas[k]:+d})" for k in keys[:most])
    return f"[{shown}{', ...' if len(keys) > most else ''}]"


def _maybe_ran(exc: Exception) -> bool:
    """Whether a failed script call may have run in Redis: its reply was lost (a timeout, a connection
    that died), or its last try met a node that did not run it after an earlier try that may have.
    An error reply of the script, or a failed re-seed (Redis answered that nothing was applied), is an
    answer."""
    if isinstance(exc, CountersUnavailable):
        return False
    return not isinstance(exc, ResponseError) or isinstance(exc, (ReadOnlyError, MasterDownError, NoScriptError))


def _no_lease(key: str, limit: int, incr: int, expire: int, soft: bool, pending: dict[str, int]) -> int:
    return 0  # leases off: one script call per admission, as before leases
