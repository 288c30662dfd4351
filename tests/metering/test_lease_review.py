"""Adversarial cases of the Redis counter leases (counters_lease): grants answered after the limit
changed, ... each against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from multihome.config.metering import MeteringConfig, RateLimitRule
from multihome.metering.rules import Rules

from .test_counter_leases import admit, raw, replicas, started

pytestmark = pytest.mark.anyio


async def test_a_grant_asked_under_the_old_limit_is_not_used_under_a_lowered_one(redis_server):
    # One admission asks for a lease under 10^9 tokens a minute; the limit is lowered to 4,000 before the
    # sender sends it, and a second admission (under 4,000) rides in the same script call. The first one's
    # grant is made under the old limit; it must not let the replica admit past the new one.
    (lim,) = await started(
        replicas(redis_server.url, 1, rate_limits=[RateLimitRule(scope="key", id="*", tokens_per_minute=10**9)])
    )
    first = asyncio.ensure_future(admit(lim, "old"))
    await asyncio.sleep(0)  # `first` queues its admission; the sender has not run yet
    lowered = MeteringConfig(
        key_prefix=lim.cfg.key_prefix, rate_limits=[RateLimitRule(scope="key", id="*", tokens_per_minute=4_000)]
    )
    lim.use_rules(Rules(lowered))
    tickets = await asyncio.gather(first, admit(lim, "new"))
    assert all(t is not None for t in tickets)  # 1,500 tokens each: 3,000 of 4,000
    key = tickets[1].reserved[0][0]
    more = [await admit(lim, f"more{i}") for i in range(6)]
    admitted = 2 + sum(t is not None for t in more)
    assert admitted * 1_500 <= 4_000, f"{admitted} admissions of 1,500 tokens under a limit of 4,000"
    await lim.drain()
    assert raw(redis_server.url, key) <= 4_000
    await lim.close()
