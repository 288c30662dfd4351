"""A script call's reply lost to a timeout after Redis ran the call: its callers got the fallback, so
its reservations and grants must not stay counted (against a real Redis, behind a proxy that swallows
one reply and keeps the connection open)."""

from __future__ import annotations

import asyncio
import time

import pytest

from multihome.config.metering import RateLimitRule

from .redis_proxy import RedisProxy
from .test_counter_leases import admit, raw, replicas, started

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("same_minute")]


class _SwallowingProxy(RedisProxy):
    """A TCP proxy to Redis; when armed, the next reply of a script call is not passed on (Redis ran it;
    the client waits until its timeout). When `held` is set, replies wait until it is cleared."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.armed, self.swallowed = False, 0
        self.held, self.holding = False, 0

    async def relay(self, data: bytes, replies: bool, conn: dict) -> bytes | object:
        if not replies:
            conn["script"] = conn.get("script") or b"EVALSHA" in data
            return data
        if self.armed and conn.get("script"):
            self.armed, self.swallowed = False, self.swallowed + 1
            return b""
        conn["script"] = False
        while self.held:
            self.holding = 1
            await asyncio.sleep(0.01)
        return data


@pytest.mark.parametrize("leases", [False, True])
async def test_a_call_whose_reply_was_lost_to_a_timeout_leaves_nothing_counted(redis_server, leases):
    # The lost call's admission was applied in Redis (a request counted, with leases a grant besides)
    # while its caller got the fallback, which settles nothing: both stayed counted until the window
    # ended. The call is sent again (same number: Redis answers the first run's reply), and what it
    # applied is given back.
    proxy = _SwallowingProxy(int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    url = await proxy.start()
    (lim,) = await started(
        replicas(
            url,
            1,
            leases=leases,
            timeout_s=0.5,
            rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000)],
        )
    )
    try:
        warm = await admit(lim, "warm", key_id="key_a")  # the sender's connection is made
        assert b"x-multihome-limits" not in dict(warm.headers)
        proxy.armed = True
        lost = await admit(lim, "lost", key_id="key_b")
        assert dict(lost.headers)[b"x-multihome-limits"] == b"unavailable" and proxy.swallowed == 1
        key = f"{lim.cfg.key_prefix}r:key:ten_a:key_b:r:{int(lim.clock()) // 60}"
        deadline = time.monotonic() + 20
        while raw(redis_server.url, key) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the call sent again, its admission given back
        await lim.drain()  # (with leases: what was granted is given back)
        assert raw(redis_server.url, key) == 0, "the lost call's admission (or grant) stayed counted"
        after = await admit(lim, "after", key_id="key_b")  # Redis answers as before
        assert b"x-multihome-limits" not in dict(after.headers)
        await lim.drain()
        assert raw(redis_server.url, key) == 1
    finally:
        await lim.close()
        await proxy.close()


async def test_an_admission_whose_caller_left_before_the_reply_is_given_back(redis_server):
    # A caller that stops waiting while its admission is in flight (cancelled: its client went away, or
    # the watchdog failed it as the reply came) settles nothing, yet Redis applied the admission: it
    # stayed counted until the window ended.
    proxy = _SwallowingProxy(int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    url = await proxy.start()
    (lim,) = await started(
        replicas(url, 1, leases=False, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=100_000)])
    )
    try:
        await admit(lim, "warm", key_id="key_a")
        proxy.held = True
        waiting = asyncio.ensure_future(admit(lim, "left", key_id="key_b"))
        key = f"{lim.cfg.key_prefix}r:key:ten_a:key_b:r:{int(lim.clock()) // 60}"
        deadline = time.monotonic() + 10
        while not (proxy.holding and raw(redis_server.url, key)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # Redis ran the admission; its reply is held
        assert raw(redis_server.url, key) == 1
        waiting.cancel()
        proxy.held = False
        with pytest.raises(asyncio.CancelledError):
            await waiting
        deadline = time.monotonic() + 10
        while raw(redis_server.url, key) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the reply came; the admission is given back
        assert raw(redis_server.url, key) == 0, "the admission of a caller that left stayed counted"
    finally:
        await lim.close()
        await proxy.close()


class _CancelsOnReply:
    """An admission's future that cancels its caller as the reply is set, before the caller resumes: a
    client's hang-up (api/head_limit.py) handled in the loop iteration that also read Redis's reply."""

    def __init__(self, future: asyncio.Future, caller: asyncio.Task) -> None:
        self.future, self.caller = future, caller

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, result) -> None:
        self.future.set_result(result)
        self.caller.cancel()

    def set_exception(self, exc: BaseException) -> None:
        self.future.set_exception(exc)


async def test_an_admission_whose_caller_is_cancelled_as_its_reply_comes_is_given_back(redis_server):
    # The reply is the future's result, but a cancel that comes before the caller resumes throws
    # CancelledError into it at the await: the result is dropped, and the sender, which saw a caller still
    # waiting, gave nothing back. A budget's reservation stayed counted until its period ended (for ever on
    # a `total` budget).
    (lim,) = await started(
        replicas(
            redis_server.url, 1, leases=False, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=10)]
        )
    )
    try:
        key = f"{lim.cfg.key_prefix}r:key:ten_a:key_b:r:{int(lim.clock()) // 60}"
        waiting = asyncio.ensure_future(admit(lim, "left", key_id="key_b"))
        deadline = time.monotonic() + 10
        while not lim.counters._queue and time.monotonic() < deadline:
            await asyncio.sleep(0)
        entry = lim.counters._queue[-1]
        entry[2] = _CancelsOnReply(entry[2], waiting)
        with pytest.raises(asyncio.CancelledError):
            await waiting
        deadline = time.monotonic() + 10
        while raw(redis_server.url, key) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the admission is given back
        assert raw(redis_server.url, key) == 0, "the admission of a caller cancelled as its reply came stayed counted"
    finally:
        await lim.close()
