"""The Redis eviction check at start: a counter Redis may evict is spend the gateway forgets.

Budget and rate counters carry a TTL (the end of their period or window), so a `volatile-*` policy
evicts exactly them under memory pressure, and an `allkeys-*` one may: a budget's spend evicted
mid-period can be spent again. With `maxmemory` set, only `noeviction` keeps them (writes then fail,
and `fail_open` decides). Anything else refuses to start, unless the operator accepts the risk with
`metering.redis_allow_eviction: true` (docs/metering.md "Redis memory").
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ResponseError

log = logging.getLogger("multihome.metering")

FIX = (
    "set maxmemory-policy noeviction on that Redis (or maxmemory 0), or accept that budgets and rate limits "
    "may be exceeded by setting metering.redis_allow_eviction: true"
)


class EvictingRedis(RuntimeError):
    """Redis may evict the counters and no override accepts it: the gateway does not start."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def memory_settings(redis: Any) -> tuple[int | None, str | None]:
    """(maxmemory, maxmemory_policy) as Redis reports them; None for what it does not tell.

    `INFO memory` first: managed Redis often disables CONFIG but serves INFO. CONFIG GET fills in what
    INFO left out (an older or stripped INFO)."""
    try:
        info = await redis.info("memory")
    except ResponseError:  # INFO renamed or disabled
        info = {}
    maxmemory = _int(info.get("maxmemory"))
    policy = _text(info.get("maxmemory_policy"))
    if maxmemory is None or policy is None:
        try:
            conf = await redis.config_get("maxmemory*")
        except ResponseError:  # CONFIG disabled (managed Redis)
            conf = {}
        conf = {_text(k): v for k, v in conf.items()}
        maxmemory = maxmemory if maxmemory is not None else _int(conf.get("maxmemory"))
        policy = policy if policy is not None else _text(conf.get("maxmemory-policy"))
    return maxmemory, policy


def _int(value: Any) -> int | None:
    try:
        return int(_text(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


async def check(redis: Any, allow_eviction: bool) -> None:
    """Raise EvictingRedis if Redis may evict the counters and `allow_eviction` is false; log once if
    it is true, or if Redis does not tell (neither INFO nor CONFIG answers: a managed Redis that hides
    both is trusted, with a warning, rather than locked out)."""
    maxmemory, policy = await memory_settings(redis)
    if maxmemory == 0 or policy == "noeviction":
        return  # no limit (64-bit Redis then never evicts), or one that never evicts
    if maxmemory is None or policy is None:
        log.warning(
            "metering: cannot read Redis's maxmemory and maxmemory-policy (INFO memory and CONFIG GET "
            "answer neither): if that Redis may evict keys, budget and rate counters can be lost and "
            "their limits exceeded; use maxmemory-policy noeviction (docs/metering.md 'Redis memory')"
        )
        return
    if allow_eviction:
        log.warning(
            "metering: Redis has maxmemory %d with maxmemory-policy %s, which can evict budget and rate "
            "counters (their spend is then forgotten and can be spent again); started anyway because "
            "metering.redis_allow_eviction is true",
            maxmemory,
            policy,
        )
        return
    raise EvictingRedis(
        f"metering: Redis has maxmemory {maxmemory} with maxmemory-policy {policy}, which can evict budget and "
        f"rate counters (they carry a TTL): a budget's spend would be forgotten mid-period and spent again. "
        f"{FIX} (docs/metering.md 'Redis memory')"
    )
