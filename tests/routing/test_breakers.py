from multihome.config import Breaker
from multihome.routing.breakers import Breakers


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_opens_after_consecutive_failures_and_closes_after_one_good_probe():
    clock = Clock()
    b = Breakers(Breaker(consecutive_failures=3, cooldown_s=10), clock=clock)
    assert b.record("d", False) is None and b.record("d", False) is None
    assert b.record("d", False) == "open"
    assert b.allows("d")[0] is False
    clock.t += 10
    assert b.begin("d") is True  # the one half-open probe
    assert b.begin("d") is False  # nobody else while it is in flight
    assert b.record("d", True) == "closed"
    assert b.allows("d") == (True, "")


def test_failed_probe_reopens_for_a_new_cooldown():
    clock = Clock()
    b = Breakers(Breaker(consecutive_failures=1, cooldown_s=5), clock=clock)
    b.record("d", False)
    clock.t += 5
    assert b.begin("d")
    assert b.record("d", False) == "open"
    assert not b.allows("d")[0]
    clock.t += 4.9
    assert not b.begin("d")


def test_success_resets_the_consecutive_count():
    b = Breakers(Breaker(consecutive_failures=2))
    b.record("d", False)
    b.record("d", True)
    assert b.record("d", False) is None


def test_error_rate_mode():
    clock = Clock()
    b = Breakers(Breaker(consecutive_failures=0, error_rate=0.5, min_requests=10, window_s=30), clock=clock)
    for i in range(9):
        b.record("d", i % 2 == 0)  # 4 failures of 9: below min_requests anyway
    assert b.allows("d")[0]
    assert b.record("d", False) == "open"  # 5 of 10 failed


def test_shared_breakers_background_work_survives_redis_being_down():
    # Resetting the shared failure count after a success ran as a bare Redis call: with Redis down
    # its task died with an unretrieved ConnectionError instead of the warning the other writes log.
    import asyncio

    from multihome.routing.breakers_redis import SharedBreakers
    from ports import free_port

    port = free_port()  # nobody listens there (below the ephemeral range: no self-connect)

    async def run():
        b = SharedBreakers(Breaker(consecutive_failures=3, cooldown_s=10), f"redis://127.0.0.1:{port}")
        b.get("d").shared_failures = 2  # another replica's failures, seen in Redis earlier
        b.record("d", True)
        results = await asyncio.gather(*b._tasks, return_exceptions=True)
        await b.close()
        return results

    results = asyncio.run(run())
    assert results and not any(isinstance(r, BaseException) for r in results)


def test_a_shared_probe_claim_cancelled_in_flight_leaves_the_breaker_probeable():
    # The half-open probe slot is taken locally, then claimed in Redis (SET NX). A call cancelled during that
    # round trip (its client hung up: api/head_limit.py) left `probing` set: this replica then refused the
    # deployment for good ("probe in flight"), with no probe in flight to clear it.
    import asyncio

    from multihome.routing.breakers_redis import SharedBreakers

    class _SlowRedis:  # a Redis whose answer to the claim has not come yet
        async def set(self, *args, **kwargs):
            await asyncio.Event().wait()

        async def aclose(self) -> None:
            pass

    async def run() -> tuple[bool, str]:
        b = SharedBreakers(Breaker(consecutive_failures=1, cooldown_s=0.05), "redis://127.0.0.1:1")
        await b._redis.aclose()
        b._redis = _SlowRedis()  # type: ignore[assignment]
        try:
            b.get("d").trip(b.now())  # open
            await asyncio.sleep(0.1)  # the cooldown is over: the next call is the probe
            claim = asyncio.ensure_future(b.admit("d"))
            await asyncio.sleep(0)  # the probe slot taken, its claim in Redis in flight
            assert b.get("d").probing
            claim.cancel()
            try:
                await claim
            except asyncio.CancelledError:
                pass
            return b.allows("d")
        finally:
            await b.close()

    allowed, why = asyncio.run(run())
    assert allowed, why
