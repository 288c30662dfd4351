"""The same counters in Redis, for every replica: one Lua script per admission (one round trip).

Scripts run atomically in Redis, so two replicas can never both take the last unit of a budget
or a rate window. Numbers in Lua are doubles: counters are exact up to 2^53 (9e15 nano-units,
nine million currency units per budget period; documented in docs/metering.md).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from .counters import BUDGET, DEPLOYMENT, OK, RATE, Outcome, Plan

# KEYS: budgets, then rates, then every deployment counter (group by group).
# ARGV: nb, nr, ng, rate_expire_ms; per budget: limit, reserve, hard(1/0), expire_at_ms(0: never);
#       per rate: limit, incr; per group: size, then per counter: limit, incr.
ADMIT = """
local nb, nr, ng = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rexp = ARGV[4]
local a = 5
for i = 1, nb do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if ARGV[a + 2] == '1' and used + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then return {1, i - 1, used} end
  a = a + 4
end
for i = 1, nr do
  local used = tonumber(redis.call('GET', KEYS[nb + i]) or '0')
  if used + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then return {2, i - 1, used} end
  a = a + 2
end
local chosen, ck, ca, csize = -1, 0, 0, 0
local k = nb + nr
for g = 1, ng do
  local size = tonumber(ARGV[a])
  a = a + 1
  local fits = true
  for j = 0, size - 1 do
    local used = tonumber(redis.call('GET', KEYS[k + 1 + j]) or '0')
    if used + tonumber(ARGV[a + 2 * j + 1]) > tonumber(ARGV[a + 2 * j]) then fits = false break end
  end
  if fits then chosen, ck, ca, csize = g - 1, k, a, size break end
  a = a + 2 * size
  k = k + size
end
if ng > 0 and chosen < 0 then return {3, -1, 0} end
local out = {0, chosen}
a = 5
for i = 1, nb do
  out[#out + 1] = redis.call('INCRBY', KEYS[i], ARGV[a + 1])
  if ARGV[a + 3] ~= '0' then redis.call('PEXPIREAT', KEYS[i], ARGV[a + 3]) end
  a = a + 4
end
for i = 1, nr do
  out[#out + 1] = redis.call('INCRBY', KEYS[nb + i], ARGV[a + 1])
  redis.call('PEXPIREAT', KEYS[nb + i], rexp)
  a = a + 2
end
for j = 0, csize - 1 do
  out[#out + 1] = redis.call('INCRBY', KEYS[ck + 1 + j], ARGV[ca + 2 * j + 1])
  redis.call('PEXPIREAT', KEYS[ck + 1 + j], rexp)
end
return out
"""

# Settle: add deltas only to counters that still exist (never revive an expired window).
ADJUST = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i]) end
end
return 0
"""

SEED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') and ARGV[2] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 0
"""


class RedisCounters:
    shared = True

    def __init__(self, url: str, max_connections: int = 64) -> None:
        # A blocking pool: a burst waits for a connection instead of failing (redis-py's default pool errors).
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
        self.redis = aioredis.Redis(connection_pool=pool)
        self._admit = self.redis.register_script(ADMIT)
        self._adjust = self.redis.register_script(ADJUST)
        self._seed = self.redis.register_script(SEED)
        self._queue: list = []
        self._sha: str | None = None
        self._sender: asyncio.Task | None = None

    async def admit(self, plan: Plan, now_ms: int) -> Outcome:
        """Queue the admission; every admission of one loop iteration goes out in one pipeline."""
        keys: list[str] = []
        args: list[int | str] = [len(plan.budgets), len(plan.rates), len(plan.groups), plan.rate_expire_ms]
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
        self._queue.append((keys, args, future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        out = await future
        code = int(out[0])
        if code == OK:
            return Outcome(OK, int(out[1]), [int(v) for v in out[2:]])
        assert code in (BUDGET, RATE, DEPLOYMENT)
        return Outcome(code, int(out[1]), [int(out[2])])

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # gather this loop iteration's admissions
            while self._queue:
                batch, self._queue = self._queue[:512], self._queue[512:]
                try:
                    results = await self._pipeline(batch)
                except Exception as exc:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)
        finally:
            self._sender = None

    async def _pipeline(self, batch) -> list:
        for attempt in (0, 1):
            if self._sha is None:
                self._sha = await self.redis.script_load(ADMIT)
            pipe = self.redis.pipeline(transaction=False)  # each script is atomic on its own
            for keys, args, _ in batch:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            try:
                return await pipe.execute()
            except aioredis.ResponseError as exc:  # NOSCRIPT: Redis restarted and lost the script
                if attempt or "NOSCRIPT" not in str(exc):
                    raise
                self._sha = None
        raise AssertionError("unreachable")

    async def adjust_async(self, deltas: list[tuple[str, int]]) -> None:
        if deltas:
            await self._adjust(keys=[k for k, _ in deltas], args=[d for _, d in deltas])

    async def seed(self, key: str, value: int, expire_at_ms: int) -> None:
        await self._seed(keys=[key], args=[value, expire_at_ms])

    async def read(self, keys: list[str], now_ms: int) -> list[int]:
        if not keys:
            return []
        return [int(v) if v is not None else 0 for v in await self.redis.mget(keys)]

    async def start(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()
