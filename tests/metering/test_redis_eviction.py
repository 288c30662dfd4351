"""The gateway refuses a counter Redis that may evict its counters (they carry a TTL, so volatile-*
policies evict exactly them): a budget's spend evicted mid-period would be spent again."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis

from multihome.config.load import parse_config
from multihome.metering.redis_eviction import EvictingRedis
from multihome.metering.service import Metering

from .conftest import NO_UPSTREAM, Dep, RedisServer, principal

pytestmark = pytest.mark.anyio

CONFIG = (
    NO_UPSTREAM
    + """metering:
  redis_url_env: EVICTION_TEST_REDIS
  key_prefix: "%s:"
  rate_limits: [{scope: key, id: "*", requests_per_minute: 1000}]
"""
)


@pytest.fixture(scope="module")
def server():
    # Its own server: the tests change its memory settings.
    s = RedisServer()
    yield s
    s.stop()


def configure(server: RedisServer, maxmemory: str, policy: str) -> None:
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory", maxmemory)
    client.config_set("maxmemory-policy", policy)
    client.close()


async def start(server: RedisServer, monkeypatch, extra: str = "") -> Metering:
    monkeypatch.setenv("EVICTION_TEST_REDIS", server.url)
    metering = Metering.from_config(parse_config(CONFIG % uuid.uuid4().hex[:8] + extra))
    await metering.start()
    return metering


async def admits(metering: Metering) -> None:
    """Started, and its counters answer: an admission goes through Redis."""
    await metering.limiter.counters.claim()  # as start does with storage (these tests have none)
    ticket = await metering.limiter.admit(principal(), "g", [Dep("a@sim")], 10, 10, uuid.uuid4().hex)
    ticket.settle(0, "USD", 20)


async def test_a_policy_that_evicts_counters_refuses_to_start(server, monkeypatch, caplog):
    configure(server, "100mb", "volatile-lru")
    monkeypatch.setenv("EVICTION_TEST_REDIS", server.url)
    metering = Metering.from_config(parse_config(CONFIG % "x"))
    with pytest.raises(EvictingRedis) as refused:
        await metering.start()
    message = str(refused.value)
    assert "maxmemory-policy volatile-lru" in message
    assert "noeviction" in message and "metering.redis_allow_eviction: true" in message
    await metering.close()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
async def test_every_evicting_policy_is_refused(server, monkeypatch, policy):
    configure(server, "100mb", policy)
    monkeypatch.setenv("EVICTION_TEST_REDIS", server.url)
    metering = Metering.from_config(parse_config(CONFIG % "x"))
    with pytest.raises(EvictingRedis, match=policy):
        await metering.start()
    await metering.close()


async def test_noeviction_starts(server, monkeypatch, caplog):
    configure(server, "100mb", "noeviction")
    metering = await start(server, monkeypatch)
    await admits(metering)
    assert "maxmemory" not in caplog.text
    await metering.close()


async def test_no_maxmemory_starts(server, monkeypatch, caplog):
    configure(server, "0", "volatile-lru")  # a policy without a limit never evicts
    metering = await start(server, monkeypatch)
    await admits(metering)
    assert "maxmemory" not in caplog.text
    await metering.close()


async def test_the_override_starts_and_warns_once(server, monkeypatch, caplog):
    configure(server, "100mb", "volatile-lru")
    caplog.set_level(logging.WARNING, logger="multihome.metering")
    metering = await start(server, monkeypatch, "  redis_allow_eviction: true\n")
    await admits(metering)
    warnings = [r for r in caplog.records if "redis_allow_eviction" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "volatile-lru" in warnings[0].getMessage()
    await metering.close()


class _Hidden:
    """A Redis client whose server disables what the check asks (managed Redis may disable CONFIG, and
    a few INFO): redis-py raises ResponseError for a disabled command."""

    def __init__(self, info: dict | None, config: dict | None) -> None:
        self._info, self._config = info, config

    async def info(self, section):
        if self._info is None:
            raise redis.ResponseError("ERR unknown command 'INFO'")
        return self._info

    async def config_get(self, pattern):
        if self._config is None:
            raise redis.ResponseError("ERR unknown command 'CONFIG'")
        return self._config


async def test_config_disabled_reads_info():
    from multihome.metering.redis_eviction import check

    with pytest.raises(EvictingRedis, match="allkeys-lfu"):
        await check(_Hidden({"maxmemory": 10, "maxmemory_policy": "allkeys-lfu"}, None), False)
    await check(_Hidden({"maxmemory": 10, "maxmemory_policy": "noeviction"}, None), False)


async def test_info_without_the_fields_reads_config():
    from multihome.metering.redis_eviction import check

    with pytest.raises(EvictingRedis, match="volatile-lfu"):
        await check(_Hidden({}, {b"maxmemory": b"10", b"maxmemory-policy": b"volatile-lfu"}), False)


async def test_neither_answering_starts_with_a_warning(caplog):
    from multihome.metering.redis_eviction import check

    caplog.set_level(logging.WARNING, logger="multihome.metering")
    await check(_Hidden(None, None), False)
    assert "cannot read Redis's maxmemory" in caplog.text
