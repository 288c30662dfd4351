"""A call that failed over (the deployment admission charged failed, another served it) is counted on the
SERVING deployment's tokens-per-minute limit, as a re-seed from the stored rows counts its row (the row
names the serving deployment: Metering.seed_rates); not on the limit of the deployment admission charged."""

from __future__ import annotations

import msgspec
import pytest

from multihome.accounting.record import AttemptRecord
from multihome.accounting.tracker import Accounting
from multihome.metering.counters import LocalCounters
from multihome.metering.counters_redis import RedisCounters
from multihome.metering.prices import PriceTable
from multihome.metering.service import Metering
from multihome.routing.attempts import Attempt, Served
from multihome.schema.peek import Usage as Reported

from .conftest import Dep, call, principal, tokens_this_minute, two_deployment_limits

pytestmark = pytest.mark.anyio


class _Adapter:
    kind = "openai"


class _ServingDep:
    """The fields of routing.catalog.DeploymentRuntime the record and the limiter read."""

    name, provider, adapter, region, data_zone, max_output_tokens = "dep-b", "p", _Adapter(), "reg", "zone", None


def _by_record(m: Metering) -> None:
    attempts = (AttemptRecord("dep-a", "http_503", 1.0), AttemptRecord("dep-b", "ok", 2.0))
    m.record(msgspec.structs.replace(call("r1", deployment="dep-b", prompt=100, completion=50), attempts=attempts))


def _by_facts(m: Metering) -> None:
    # The tracker's finish, as the front door ends a call served after a failover (accounting.CallFacts).
    tracker = Accounting([m]).begin("r1", "chat", principal(), b"{}")
    assert tracker is not None
    tracker.model_group, tracker.request = "g", None
    attempts = [Attempt("dep-a", "http_503", 1.0, "busy"), Attempt("dep-b", "ok", 2.0)]
    tracker.finish(200, "ok", served=Served(_ServingDep(), 200, attempts), usage=Reported(100, 50))  # type: ignore[arg-type]


@pytest.mark.usefixtures("same_minute")
@pytest.mark.parametrize("b_charged_before", [True, False], ids=["b-counted", "b-new"])
@pytest.mark.parametrize("finish", [_by_record, _by_facts])
@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_a_failed_over_call_counts_on_the_serving_deployment_s_token_limit(
    kind, finish, b_charged_before, request
):
    counters = (
        LocalCounters() if kind == "local" else RedisCounters(request.getfixturevalue("redis_server").url, timeout_s=30)
    )
    m = Metering(two_deployment_limits(), PriceTable({}), counters=counters)
    await m.limiter.start()
    try:
        if b_charged_before:  # dep-b took a call this minute: its counter exists
            other = await m.limiter.admit(principal(key_id="key_b"), "g", [Dep("dep-b")], 10, 10, "r0")
            other.settle(0, "USD", 0)
        # (else no call was charged on dep-b this minute: its counter is made, in Redis too)
        ticket = await m.limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
        assert ticket.deployment == "dep-a"  # admission charged the first planned deployment
        finish(m)  # dep-a answered 503; dep-b served the call: 150 tokens
        assert ticket.settled
        await m.limiter.drain()
        assert await tokens_this_minute(m.limiter, "deployment", "dep-a") == 0
        assert await tokens_this_minute(m.limiter, "deployment", "dep-b") == 150
        assert await tokens_this_minute(m.limiter, "key", "key_a") == 150
    finally:
        await m.limiter.close()


@pytest.mark.usefixtures("same_minute")
async def test_the_call_served_by_the_deployment_admission_charged_stays_on_it():
    m = Metering(two_deployment_limits(), PriceTable({}), counters=LocalCounters())
    await m.limiter.start()
    try:
        await m.limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
        m.record(call("r1", deployment="dep-a", prompt=100, completion=50))
        assert await tokens_this_minute(m.limiter, "deployment", "dep-a") == 150
        assert await tokens_this_minute(m.limiter, "deployment", "dep-b") == 0
    finally:
        await m.limiter.close()
