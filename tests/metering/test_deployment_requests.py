"""A deployment's requests-per-minute limit counts the upstream calls the gateway made to it (docs/metering.md
"Deployment limits"): admission counts one on the deployment it charged; a failover, a retry, a hedge or a
refusal failed over from is another call, counted on its own deployment when the call is recorded, on this
minute's counter (made if no call was charged on it yet). In process and in Redis alike. A fallback group's
deployment, which admission never charged, gets its calls and the tokens it served too."""

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

from .conftest import Dep, call, deployment_calls_limits, principal, requests_this_minute, tokens_this_minute

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("same_minute")]


class _Adapter:
    kind = "openai"


class _Runtime:
    """The fields of routing.catalog.DeploymentRuntime the record and the limiter read."""

    provider, adapter, region, data_zone, max_output_tokens = "p", _Adapter(), "reg", "zone", None

    def __init__(self, name: str) -> None:
        self.name = name


def _by_record(m: Metering, served: str, attempts: list[tuple[str, str]]) -> None:
    record = call("r1", deployment=served, prompt=100, completion=50)
    m.record(msgspec.structs.replace(record, attempts=tuple(AttemptRecord(d, o, 1.0) for d, o in attempts)))


def _by_facts(m: Metering, served: str, attempts: list[tuple[str, str]]) -> None:
    # The tracker's finish, as the front door ends a served call (accounting.CallFacts).
    tracker = Accounting([m]).begin("r1", "chat", principal(), b"{}")
    assert tracker is not None
    tracker.model_group, tracker.request = "g", None
    walked = [Attempt(d, o, 1.0) for d, o in attempts]
    tracker.finish(200, "ok", served=Served(_Runtime(served), 200, walked), usage=Reported(100, 50))  # type: ignore[arg-type]


@pytest.fixture(params=["local", "redis"])
async def metering(request):
    counters = (
        LocalCounters()
        if request.param == "local"
        else RedisCounters(request.getfixturevalue("redis_server").url, timeout_s=30)
    )
    m = Metering(deployment_calls_limits(), PriceTable({}), counters=counters)
    await m.limiter.start()
    yield m
    await m.limiter.close()


async def _counts(m: Metering, *deployments: str) -> list[tuple[int, int]]:
    await m.limiter.drain()
    return [
        (await requests_this_minute(m.limiter, "deployment", d), await tokens_this_minute(m.limiter, "deployment", d))
        for d in deployments
    ]


@pytest.mark.parametrize("finish", [_by_record, _by_facts])
async def test_a_failed_over_call_counts_a_request_on_each_deployment_it_called(metering, finish):
    ticket = await metering.limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
    assert ticket.deployment == "dep-a"  # admission charged the first planned deployment
    finish(metering, "dep-b", [("dep-a", "http_503"), ("dep-b", "ok")])
    # dep-a was called (and failed), dep-b was called and served: one request each, the tokens on dep-b.
    assert await _counts(metering, "dep-a", "dep-b") == [(1, 0), (1, 150)]
    assert await requests_this_minute(metering.limiter, "key", "key_a") == 1  # the client made one call


@pytest.mark.parametrize("finish", [_by_record, _by_facts])
async def test_retries_and_a_refusal_failed_over_from_are_calls_a_skip_is_not(metering, finish):
    await metering.limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
    attempts = [
        ("dep-a", "http_503"),
        ("dep-a", "http_503"),
        ("dep-a", "content_filter"),  # a 200 refusal the group fails over on: an upstream call all the same
        ("dep-u", "skipped"),
        ("dep-b", "breaker_open"),
        ("dep-b", "timeout"),
        ("dep-b", "ok"),
    ]
    finish(metering, "dep-b", attempts)
    assert await _counts(metering, "dep-a", "dep-b") == [(3, 0), (2, 150)]


@pytest.mark.parametrize("finish", [_by_record, _by_facts])
async def test_a_fallback_group_s_deployment_counts_its_call_and_tokens(metering, finish):
    # The group's only deployment has no limit: admission charged no deployment (the route has no limit).
    ticket = await metering.limiter.admit(principal(), "g", [Dep("dep-u")], 100, 100, "r1")
    assert ticket.deployment is None
    finish(metering, "dep-b", [("dep-u", "http_503"), ("g2", "fallback_group"), ("dep-b", "ok")])
    assert await _counts(metering, "dep-a", "dep-b") == [(0, 0), (1, 150)]


async def test_a_call_served_where_admission_charged_it_counts_once(metering):
    await metering.limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
    _by_record(metering, "dep-a", [("dep-a", "ok")])
    assert await _counts(metering, "dep-a", "dep-b") == [(1, 150), (0, 0)]


async def test_a_call_no_deployment_served_counts_every_call_made(metering):
    await metering.limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
    attempts = (AttemptRecord("dep-a", "http_503", 1.0), AttemptRecord("dep-b", "timeout", 1.0))
    record = call("r1", deployment=None, prompt=0, completion=0, status=503, outcome="declined")
    metering.record(msgspec.structs.replace(record, attempts=attempts, usage=None))
    assert await _counts(metering, "dep-a", "dep-b") == [(1, 0), (1, 0)]


async def test_a_re_seed_counts_an_unserved_answer_as_a_call_of_its_deployment(tmp_path):
    """Seeded from the stored rows (a restart, an empty Redis), as the live counters count it: a deployment's
    `unserved` row (an answer billed and not served) is an upstream call made to it; the client's own call
    is the one request on its key."""
    from multihome.storage import open_store

    url = f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}"
    await (await open_store(url, migrate=True)).close()
    cfg = deployment_calls_limits()
    first = Metering(cfg, PriceTable({}), storage_url=url)
    await first.start()
    first.record(call("r1", deployment="dep-b", prompt=100, completion=50))
    first.record(call("r1.1", deployment="dep-a", prompt=10, completion=5, outcome="unserved"))
    await first.close()
    second = Metering(cfg, PriceTable({}), storage_url=url)  # in-process counters, seeded from the rows
    await second.start()
    try:
        assert await _counts(second, "dep-a", "dep-b") == [(1, 15), (1, 150)]
        assert await requests_this_minute(second.limiter, "key", "key_a") == 1
    finally:
        await second.close()


async def test_a_failover_s_own_admission_is_settled_once(metering):
    """A failover attempt admitted on its deployment (Limiter.admit_attempt) counted its request and reserved
    the call's tokens there; the call's record neither counts that request again nor keeps the reservation.
    An attempt admitted and then not made (its breaker open) gives its request back too."""
    limiter = metering.limiter
    ticket = await limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
    assert await limiter.admit_attempt(ticket, "dep-b", 100, 100, 1, 4096) is None
    assert await _counts(metering, "dep-b") == [(1, 200)]  # counted before the call is made
    _by_record(metering, "dep-b", [("dep-a", "http_503"), ("dep-b", "ok")])
    assert await _counts(metering, "dep-a", "dep-b") == [(1, 0), (1, 150)]

    ticket = await limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r2")
    assert await limiter.admit_attempt(ticket, "dep-b", 100, None, 1, 50) is None  # its own cap: 150 tokens
    assert await _counts(metering, "dep-b") == [(2, 300)]
    record = call("r2", deployment=None, prompt=0, completion=0, status=503, outcome="declined")
    attempts = (AttemptRecord("dep-a", "http_503", 1.0), AttemptRecord("dep-b", "breaker_open", 0.0))
    metering.record(msgspec.structs.replace(record, attempts=attempts, usage=None))
    assert await _counts(metering, "dep-a", "dep-b") == [(2, 0), (1, 150)]


async def test_a_failover_to_a_deployment_at_its_limit_counts_nothing(metering):
    limiter = metering.limiter
    ticket = await limiter.admit(principal(), "g", [Dep("dep-a"), Dep("dep-b")], 100, 100, "r1")
    refusal = await limiter.admit_attempt(ticket, "dep-b", 2_000_000, 100, 1, 4096)  # past its tokens limit
    assert refusal is not None and refusal.status == 429 and refusal.body.code == "rate_limit_exceeded"
    assert refusal.body.type == "tokens" and 1 <= int(refusal.headers["retry-after"]) <= 60
    assert await _counts(metering, "dep-b") == [(0, 0)]
    assert ticket.attempted is None
