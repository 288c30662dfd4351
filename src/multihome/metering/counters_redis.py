"""The same counters in Redis, for every replica: one Lua script call per event-loop tick.

Every admission of one loop iteration goes out in a single EVALSHA (one round trip, one reply).
The script is atomic, so two replicas can never both take the last unit of a budget or a rate
window. Each admission's numbers travel as one comma-separated string: the client packs a
handful of arguments per call instead of dozens, which is most of the client's CPU cost.
Numbers in Lua are doubles: counters are exact up to 2^53 (9e15 nano-units, nine million
currency units per budget period; documented in docs/metering.md). Increments stay strings so
INCRBY gets the exact integer.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from ..redis_client import connect
from .counters import BUDGET, DEPLOYMENT, OK, RATE, Outcome, Plan

# KEYS: the counters being settled, then per admission its budgets, rates and every deployment
#       counter (group by group).
# ARGV[1]: the settlements, "delta1,...,deltaN" (maybe empty) for the first N KEYS; a delta is added
#       only to a counter that still exists (a settlement never revives an expired window).
# ARGV[2...]: one string per admission: "nb,nr,ng,rate_expire_ms" then per budget: limit,reserve,
#       hard(1/0),expire_at_ms(0: never); per rate: limit,incr; per group: size, then per counter: limit,incr.
# Reply: one array per admission: {0, chosen group, values after applying...} or {code, index, used}.
ADMIT = """
local function admit(t, k0)
  local nb, nr, ng = tonumber(t[1]), tonumber(t[2]), tonumber(t[3])
  local rexp = t[4]
  local a = 5
  for i = 1, nb do
    local used = tonumber(redis.call('GET', KEYS[k0 + i]) or '0')
    if t[a + 2] == '1' and used + tonumber(t[a + 1]) > tonumber(t[a]) then return {1, i - 1, used} end
    a = a + 4
  end
  for i = 1, nr do
    local used = tonumber(redis.call('GET', KEYS[k0 + nb + i]) or '0')
    if used + tonumber(t[a + 1]) > tonumber(t[a]) then return {2, i - 1, used} end
    a = a + 2
  end
  local chosen, ck, ca, csize = -1, 0, 0, 0
  local k = k0 + nb + nr
  for g = 1, ng do
    local size = tonumber(t[a])
    a = a + 1
    local fits = true
    for j = 0, size - 1 do
      local used = tonumber(redis.call('GET', KEYS[k + 1 + j]) or '0')
      if used + tonumber(t[a + 2 * j + 1]) > tonumber(t[a + 2 * j]) then fits = false break end
    end
    if fits then chosen, ck, ca, csize = g - 1, k, a, size break end
    a = a + 2 * size
    k = k + size
  end
  if ng > 0 and chosen < 0 then return {3, -1, 0} end
  local out = {0, chosen}
  a = 5
  for i = 1, nb do
    out[#out + 1] = redis.call('INCRBY', KEYS[k0 + i], t[a + 1])
    if t[a + 3] ~= '0' then redis.call('PEXPIREAT', KEYS[k0 + i], t[a + 3]) end
    a = a + 4
  end
  for i = 1, nr do
    out[#out + 1] = redis.call('INCRBY', KEYS[k0 + nb + i], t[a + 1])
    redis.call('PEXPIREAT', KEYS[k0 + nb + i], rexp)
    a = a + 2
  end
  for j = 0, csize - 1 do
    out[#out + 1] = redis.call('INCRBY', KEYS[ck + 1 + j], t[ca + 2 * j + 1])
    redis.call('PEXPIREAT', KEYS[ck + 1 + j], rexp)
  end
  return out
end
local k0 = 0
for delta in string.gmatch(ARGV[1], '[^,]+') do
  k0 = k0 + 1
  if redis.call('EXISTS', KEYS[k0]) == 1 then redis.call('INCRBY', KEYS[k0], delta) end
end
local replies = {}
for n = 2, #ARGV do
  local t = {}
  for v in string.gmatch(ARGV[n], '[^,]+') do t[#t + 1] = v end
  replies[n - 1] = admit(t, k0)
  local nkeys, a = tonumber(t[1]) + tonumber(t[2]), 5 + 4 * tonumber(t[1]) + 2 * tonumber(t[2])
  for g = 1, tonumber(t[3]) do
    local size = tonumber(t[a])
    nkeys, a = nkeys + size, a + 1 + 2 * size
  end
  k0 = k0 + nkeys
end
return replies
"""

SEED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') and ARGV[2] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 0
"""


log = logging.getLogger("multihome.metering")
_BATCH = 256
SETTLE_DELAY_S = 0.02  # how long a settlement waits for admissions to ride along with  # admissions per script call: bounds how long one call holds Redis


class RedisCounters:
    shared = True

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        # A Redis that stops answering fails admissions after timeout_s (fail_open decides what then).
        self.redis = connect(url, max_connections=32, blocking=False, socket_timeout=timeout_s,
                             socket_connect_timeout=timeout_s)
        self._admit_sha = self.redis.register_script(ADMIT).sha
        self._seed = self.redis.register_script(SEED)
        # The sender task owns one connection and talks to it directly: no pool checkout, retry
        # wrapper or instrumentation per call, which cost a third of each round trip.
        self._conn = None
        self._queue: list[tuple[list[str], str, asyncio.Future]] = []
        self._pending: dict[str, int] = {}  # settlement deltas not yet sent
        self._sender: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._settle_timer: asyncio.TimerHandle | None = None
        self._closing = False

    async def admit(self, plan: Plan, now_ms: int) -> Outcome:
        """Queue the admission; every admission of one loop iteration goes out in one script call."""
        if not (plan.budgets or plan.rates or plan.groups):
            return Outcome(OK, -1, [])
        keys: list[str] = []
        args: list[int] = [len(plan.budgets), len(plan.rates), len(plan.groups), plan.rate_expire_ms]
        for key, limit, reserve, hard, expire in plan.budgets:
            keys.append(key)
            args += (limit, reserve, 1 if hard else 0, expire)
        for key, limit, incr in plan.rates:
            keys.append(key)
            args += (limit, incr)
        for counters in plan.groups:
            args.append(len(counters))
            for key, limit, incr in counters:
                keys.append(key)
                args += (limit, incr)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((keys, ",".join(map(str, args)), future))
        self._kick()
        out = await future
        code = int(out[0])
        if code == OK:
            return Outcome(OK, int(out[1]), [int(v) for v in out[2:]])
        assert code in (BUDGET, RATE, DEPLOYMENT)
        return Outcome(code, int(out[1]), [int(out[2])])

    def adjust(self, deltas: list[tuple[str, int]]) -> None:
        """Settle: deltas are merged per counter and ride along with the next admissions' script
        call, or go on their own after SETTLE_DELAY_S when no admission comes (nobody waits on them)."""
        pending = self._pending
        for key, delta in deltas:
            pending[key] = pending.get(key, 0) + delta
        if self._settle_timer is None and self._sender is None:
            self._settle_timer = asyncio.get_running_loop().call_later(SETTLE_DELAY_S, self._settle_due)

    def _settle_due(self) -> None:
        self._settle_timer = None
        if self._pending:
            self._kick()

    def _kick(self) -> None:
        self._wake.set()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        backoff = 0.05
        try:
            await asyncio.sleep(0)  # gather this loop iteration's admissions and settlements
            while self._queue or self._pending:
                self._wake.clear()
                # Whatever queues while a call is in flight goes in the next call (group commit).
                batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
                settle, self._pending = [(k, d) for k, d in self._pending.items() if d], {}
                keys = [k for k, _ in settle]
                for k, _, _ in batch:
                    keys += k
                args = [",".join(str(d) for _, d in settle), *(spec for _, spec, _ in batch)]
                try:
                    replies = await self._call(keys, args)
                except Exception as exc:  # unreachable, timeout, script error
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if settle:
                        # Kept and retried: a lost settlement would leave a reservation counted forever.
                        log.warning("could not settle %d counters in Redis (%s); retrying", len(settle), type(exc).__name__)
                        for key, delta in settle:
                            self._pending[key] = self._pending.get(key, 0) + delta
                        if self._closing:
                            return
                        if not self._queue:  # an admission arriving meanwhile is tried at once
                            try:
                                await asyncio.wait_for(self._wake.wait(), backoff)
                            except asyncio.TimeoutError:
                                pass
                            backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                for (_, _, fut), reply in zip(batch, replies):
                    if not fut.done():
                        fut.set_result(reply)
        finally:
            self._sender = None

    async def _call(self, keys: list[str], args: list[str]) -> list:
        load = False
        for attempt in (0, 1, 2):
            conn = self._conn
            try:
                if conn is None:
                    conn = self._conn = self.redis.connection_pool.make_connection()
                    await conn.connect()
                if load:
                    await conn.send_command("SCRIPT", "LOAD", ADMIT)
                    await conn.read_response()
                await conn.send_command("EVALSHA", self._admit_sha, len(keys), *keys, *args)
                return await conn.read_response()
            except NoScriptError:  # Redis restarted (or was flushed) and lost the script
                if attempt == 2:
                    raise
                load = True
            except ResponseError:
                raise  # any other error reply: the connection is still in step
            except BaseException as exc:
                self._conn = None  # unknown state (timeout, cancelled mid-reply): start a new connection
                if conn is not None:
                    await conn.disconnect()
                # A connection found dead (Redis restarted, idle connection dropped) is retried once
                # on a new one. If Redis had run the script before the connection died, its
                # reservations stay counted until their window or period ends (docs/metering.md).
                if attempt or not isinstance(exc, RedisConnectionError):
                    raise
        raise AssertionError("unreachable")

    async def drain(self, timeout: float = 5) -> None:
        """Send queued settlements now and wait until they reached Redis (or the sender gave up)."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if self._pending and self._sender is None:
            self._kick()
        while self._sender is not None:
            done, _ = await asyncio.wait([self._sender], timeout=timeout)
            if not done:
                return

    async def seed(self, key: str, value: int, expire_at_ms: int) -> None:
        await self._seed(keys=[key], args=[value, expire_at_ms])

    async def read(self, keys: list[str], now_ms: int) -> list[int]:
        if not keys:
            return []
        return [int(v) if v is not None else 0 for v in await self.redis.mget(keys)]

    async def start(self) -> None:
        await self.redis.script_load(ADMIT)  # so the first admission need not; also proves Redis answers

    async def close(self) -> None:
        self._closing = True
        await self.drain()
        if self._pending:
            log.error("closing with %d budget/rate settlements not written to Redis", len(self._pending))
        if self._conn is not None:
            await self._conn.disconnect()
        await self.redis.aclose()
