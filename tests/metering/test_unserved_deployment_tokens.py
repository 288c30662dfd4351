"""An unserved answer (a 200 refusal failed over from, a hedge's completed loser) is counted on its OWN
deployment's tokens-per-minute limit, as a re-seed from the stored rows counts its `unserved` row
(Metering.seed_rates): not on the limit of the deployment admission charged for the call."""

from __future__ import annotations

import time

import pytest

from multihome.accounting.record import Usage
from multihome.metering.counters import LocalCounters
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.limiter import Limiter
from multihome.metering.prices import PriceTable
from multihome.metering.rules import window_key

from .conftest import Dep, principal, tokens_this_minute, two_deployment_limits

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_an_unserved_answer_counts_on_its_own_deployment_s_token_limit(kind, request):
    counters = (
        LocalCounters() if kind == "local" else RedisCounters(request.getfixturevalue("redis_server").url, timeout_s=30)
    )
    lim = Limiter(two_deployment_limits(), PriceTable({}), counters, time.time)
    await lim.start()
    try:
        # dep-b took a call this minute (its counter exists, as Redis settles only onto existing counters).
        other = await lim.admit(principal(key_id="key_b"), "g", [Dep("dep-b")], 10, 10, "r0")
        other.settle(0, "USD", 0)
        ticket = await lim.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
        assert ticket.deployment == "dep-a"  # admission charged the first planned deployment
        ticket.settle(0, "USD", 30)  # the call itself, served (30 tokens)
        # dep-b answered too and was not served (a hedge's completed loser): 150 tokens it billed.
        ticket.add_use("dep-b", Usage(100, 50))
        await lim.drain()
        assert await tokens_this_minute(lim, "deployment", "dep-a") == 30
        assert await tokens_this_minute(lim, "deployment", "dep-b") == 150
        assert await tokens_this_minute(lim, "key", "key_a") == 180  # the caller's own limit counts both
    finally:
        await lim.close()


@pytest.mark.usefixtures("same_minute")
@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_an_unserved_answer_counts_on_a_deployment_no_call_was_charged_on_yet(kind, request):
    """Its counter is made (in Redis too, where a settlement otherwise lands only on a counter that exists)."""
    counters = (
        LocalCounters() if kind == "local" else RedisCounters(request.getfixturevalue("redis_server").url, timeout_s=30)
    )
    lim = Limiter(two_deployment_limits(), PriceTable({}), counters, time.time)
    await lim.start()
    try:
        ticket = await lim.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
        ticket.settle(0, "USD", 30)
        ticket.add_use("dep-b", Usage(100, 50))
        await lim.drain()
        assert await tokens_this_minute(lim, "deployment", "dep-b") == 150
        assert await tokens_this_minute(lim, "deployment", "dep-a") == 30
        if kind == "redis":  # made with its window's expiry, as an admission makes it
            spec = lim.rules.for_deployment("dep-b")
            assert spec is not None
            ttl = await counters.redis.pttl(window_key(spec, "t", int(time.time()) // 60))
            assert 0 < ttl <= 120_000
    finally:
        await lim.close()
