"""The asyncio Redis client every shared component uses: redis-py, with hiredis doing the wire work.

redis-py's asyncio connections parse replies with hiredis when it is installed, but pack commands
in Python, re-joining the whole buffer once per argument. On the metering hot path (one script
call with dozens of keys per event-loop tick) that packing was most of the client's CPU. The
connection class below hands packing to `hiredis.pack_command`, as redis-py's own synchronous
client does; everything else (pooling, TLS, auth, URL options) stays redis-py's.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, MasterDownError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _HiredisPacking:
    def pack_command(self, *args) -> list[bytes]:
        # Multi-word command names ("SCRIPT LOAD") go out as separate arguments, as redis-py sends them.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from None

    def pack_commands(self, commands) -> list[bytes]:
        return [b"".join(self.pack_command(*cmd)[0] for cmd in commands)]


@cache
def _packing(base: type) -> type:
    return type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


def connect(url: str, *, max_connections: int = 64, blocking: bool = True, **options) -> aioredis.Redis:
    """A client for `url` (redis://, rediss://, unix://). A blocking pool makes a burst wait for a
    connection instead of failing, which redis-py's default pool does. A command that finds its
    pooled connection dead (Redis restarted) is retried on a fresh one: callers send only
    commands that are safe to repeat through it. So is one refused by a replica (READONLY,
    MASTERDOWN): a failover demoted the node the pooled connection reaches (a managed Redis moves
    its name to the new primary, open connections stay), and a replica applied nothing."""
    errors = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, MasterDownError)
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2, supported_errors=errors)
    kwargs: dict[str, Any] = {"retry": retry} | parse_url(url) | options
    kwargs["connection_class"] = _packing(kwargs.get("connection_class", Connection))
    pool_class = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
    if blocking:
        kwargs.setdefault("timeout", 5)
    pool = pool_class(max_connections=max_connections, **kwargs)
    return aioredis.Redis(connection_pool=pool)
