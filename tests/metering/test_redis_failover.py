"""A Redis failover behind one name: the node the gateway's connections reach is demoted to a replica
(it answers script calls READONLY) and the name now leads to the new primary. Admissions must be
counted again in the new primary without a restart, against real redis-server processes."""

from __future__ import annotations

import time

import pytest
import redis

from multihome.config.metering import RateLimitRule

from .conftest import RedisServer
from .redis_proxy import RedisProxy
from .test_counter_leases import admit, replicas, started

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("same_minute")]


class _MovableName(RedisProxy):
    """A TCP proxy playing a DNS name: each new connection goes to the node it names now; open
    connections stay with the node they reached (as a managed Redis failover moves its name)."""


def _wait(check, what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _failover(old: RedisServer, new: RedisServer, cut_off: bool) -> None:
    """`new` (a replica of `old`) becomes the primary and `old` a replica, as a managed failover does:
    of `new` (it answers writes READONLY), or, `cut_off`, of a node it cannot reach, not serving
    stale data (it answers MASTERDOWN)."""
    r_old, r_new = redis.Redis(port=old.port), redis.Redis(port=new.port)
    r_new.replicaof("NO", "ONE")
    if cut_off:
        r_old.config_set("replica-serve-stale-data", "no")
        r_old.replicaof("127.0.0.1", 1)  # (port 1: nothing listens)
    else:
        r_old.replicaof("127.0.0.1", new.port)
    _wait(lambda: r_old.info("replication")["role"] == "slave", "the old primary was not demoted")
    # The reply the gateway's open connections get now (to the script call as to these).
    if cut_off:
        with pytest.raises(redis.exceptions.MasterDownError):
            r_old.get("probe")
    else:
        with pytest.raises(redis.exceptions.ReadOnlyError):
            r_old.set("probe", 1)


@pytest.mark.parametrize(("leases", "cut_off"), [(False, False), (True, False), (False, True)])
async def test_admissions_are_counted_in_the_new_primary_after_a_failover_without_a_restart(leases, cut_off):
    old, new = RedisServer(), RedisServer()
    name = _MovableName(old.port)
    url = await name.start()
    r_old, r_new = redis.Redis(port=old.port), redis.Redis(port=new.port)
    try:
        for r in (r_old, r_new):  # a replica loads what it is sent in memory: no dump.rdb in the cwd
            r.config_set("repl-diskless-load", "swapdb")
        r_new.replicaof("127.0.0.1", old.port)
        _wait(lambda: r_new.info("replication")["master_link_status"] == "up", "the replica did not sync")
        (lim,) = await started(
            replicas(url, 1, leases=leases, rate_limits=[RateLimitRule(scope="key", id="*", requests_per_minute=10**6)])
        )
        key = f"{lim.cfg.key_prefix}r:key:ten_a:key_a:r:{int(lim.clock()) // 60}"
        for i in range(5):
            t = await admit(lim, f"before{i}")
            assert b"x-multihome-limits" not in dict(t.headers)
        await lim.drain()  # (with leases: given back, so the counter holds just the admissions)
        assert int(r_old.get(key)) == 5
        _wait(lambda: int(r_new.get(key) or 0) == 5, "the admissions did not reach the replica")

        _failover(old, new, cut_off)
        name.port = new.port  # the name moves; the gateway's open connections still reach the old node
        for i in range(5):
            t = await admit(lim, f"after{i}")
            assert b"x-multihome-limits" not in dict(t.headers), f"admission {i} fell back: Redis refused it"
        await lim.drain()
        assert int(r_new.get(key)) == 10  # counted in the new primary
        # Re-seeding writes through the pooled connections, which also reached the old node.
        await lim.counters.seed([(f"{lim.cfg.key_prefix}b:seeded", 7, 0)])
        assert int(r_new.get(f"{lim.cfg.key_prefix}b:seeded")) == 7
        await lim.close()
    finally:
        await name.close()
        old.stop()
        new.stop()
