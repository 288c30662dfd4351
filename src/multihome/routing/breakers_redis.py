"""Breaker state shared by every replica through Redis.

The hot path still reads only local memory. Failures are counted in Redis (so N failures across
replicas open the breaker once), openings and closings are published to every replica, and the
half-open probe slot is claimed with SET NX so only one replica probes a recovering deployment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from ..aio import cancel_and_wait
from ..config import Breaker as BreakerPolicy
from ..outage_log import OutageLog
from ..storage.redis_client import connect
from .breakers import CLOSED, OPEN, Breakers

log = logging.getLogger("multihome.breakers")
CHANNEL = "multihome:breakers"


def _key(kind: str, deployment: str) -> str:
    return f"multihome:breaker:{kind}:{deployment}"


class SharedBreakers(Breakers):
    def __init__(self, policy: BreakerPolicy, url: str) -> None:
        super().__init__(policy)
        self._redis = connect(url, blocking=False, decode_responses=True)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None

    async def start(self, deployments: list[str]) -> None:
        pubsub = self._pubsub = self._redis.pubsub()
        await pubsub.subscribe(CHANNEL)
        self._listener = asyncio.create_task(self._listen(pubsub))
        for dep in deployments:  # pick up breakers other replicas opened before we started
            until = await self._redis.get(_key("open", dep))
            if until is not None:
                self._apply(dep, OPEN, float(until))

    async def close(self) -> None:
        await cancel_and_wait(self._listener)
        if self._tasks:  # breaker writes under way finish (bounded: Redis may not answer), not cut mid-way
            await asyncio.wait(set(self._tasks), timeout=2.0)
        for task in list(self._tasks):
            await cancel_and_wait(task)
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # annotated only in redis-py 8.2+
        await self._redis.aclose()

    # -- hot path: local decision, Redis work in the background --------------------------------
    def record(self, deployment: str, ok: bool) -> str | None:
        state = self.get(deployment)
        was = state.state
        changed = state.record(ok, self.now())
        if ok:
            if changed == CLOSED or was != CLOSED:
                self._spawn(self._publish_closed(deployment))
            elif state.consecutive == 0 and state.shared_failures:
                state.shared_failures = 0
                self._spawn(self._forget_failures(deployment))
            return changed
        if changed == OPEN:
            self._spawn(self._publish_open(deployment, state.open_until))
        else:
            self._spawn(self._count_failure(deployment))
        return changed

    async def admit(self, deployment: str) -> bool:
        state = self.get(deployment)
        if state.state == CLOSED:
            return True
        if not state.begin(self.now()):
            return False
        # Our local cooldown is over: claim the one probe for all replicas.
        try:
            claimed = await self._redis.set(
                _key("probe", deployment), "1", nx=True, px=int(self.policy.cooldown_s * 1000)
            )
        except aioredis.RedisError:
            claimed = True  # Redis down: fall back to a per-replica probe rather than never probing
        except BaseException:  # cancelled (its client hung up: api/head_limit.py): no probe is in flight
            state.probing = False  # (left set, this replica would refuse the deployment for good)
            raise
        if not claimed:
            state.probing = False
            state.state = OPEN
            return False
        return True

    # -- background ----------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count_failure(self, deployment: str) -> None:
        key = _key("fails", deployment)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                # Queued one by one: redis-py types each queued command as its reply, not the pipeline.
                pipe.incr(key)
                pipe.expire(key, int(self.policy.window_s) or 60)
                count, _ = await pipe.execute()
        except aioredis.RedisError as exc:
            log.warning("breaker failure count for %s not shared: %s", deployment, exc)
            return
        state = self.get(deployment)
        state.shared_failures = count
        n = self.policy.consecutive_failures
        if n and count >= n and state.state == CLOSED:
            state.trip(self.now())
            await self._publish_open(deployment, state.open_until)

    async def _forget_failures(self, deployment: str) -> None:
        try:
            await self._redis.delete(_key("fails", deployment))
        except aioredis.RedisError as exc:
            log.warning("breaker failure count for %s not reset: %s", deployment, exc)

    async def _publish_open(self, deployment: str, open_until_monotonic: float) -> None:
        until_wall = time.time() + (open_until_monotonic - self.now())
        ms = max(1, int((open_until_monotonic - self.now()) * 1000))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_key("open", deployment), repr(until_wall), px=ms)
                pipe.delete(_key("fails", deployment), _key("probe", deployment))
                pipe.publish(CHANNEL, f"{OPEN} {deployment} {until_wall!r}")
                await pipe.execute()
        except aioredis.RedisError as exc:
            log.warning("breaker opening for %s not shared: %s", deployment, exc)

    async def _publish_closed(self, deployment: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(_key("open", deployment), _key("fails", deployment), _key("probe", deployment))
                pipe.publish(CHANNEL, f"{CLOSED} {deployment} 0")
                await pipe.execute()
        except aioredis.RedisError as exc:
            log.warning("breaker closing for %s not shared: %s", deployment, exc)

    async def _listen(self, pubsub: PubSub) -> None:
        lost = OutageLog(log, "breaker channel lost", recovered="breaker channel back")
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except aioredis.RedisError as exc:
                lost.failed(exc)
                await asyncio.sleep(1)
                continue
            lost.ok()
            if message is None:
                continue
            try:
                state, deployment, until = message["data"].split(" ")
                self._apply(deployment, state, float(until))
            except ValueError:
                continue

    def _apply(self, deployment: str, state: str, until_wall: float) -> None:
        local = self.get(deployment)
        if state == OPEN:
            local.trip(self.now(), until=self.now() + max(0.0, until_wall - time.time()))
        elif state == CLOSED and local.state != CLOSED:
            local.record(True, self.now())
