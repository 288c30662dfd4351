"""What one snapshot reload costs a replica's event loop after one governance write (storage/snapshot.py).

    PYTHONPATH=src:tests .venv/bin/python bench/snapshot_reload.py [--backends sqlite,postgres] [--rounds 5]

One store handle writes (the admin API's replica), a second one (another replica) holds a `SnapshotCache` and
reloads it after each write, then the policy gate (api/policy_gate.py) rebuilds its engine from it, in its
worker thread as in the gateway; a ticker task on the same loop (1 ms sleeps) records the loop's longest stall
during each. Scenarios, `--rounds` writes each:

- `policy`: one policy of a tenant holding 16 MiB of policy rules (64 policies of 256 KiB) is edited;
- `key`: one key is created among 50,000 keys across 50 tenants;
- `team`: one team is created in that same big database (a small write among big data);
- `small`: one team is created in a database of 10 tenants with a key and a policy each (nothing big).

The big data is inserted by SQL (an API call per key would take minutes); the measured writes go through the
store. Prints, per scenario, the median and largest reload time, the largest loop stall during the reloads,
and the same for the engine's rebuilds. PostgreSQL:
a throwaway server from tests/pg.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from api.test_policy_gate_reload import CONFIG  # tests/ on PYTHONPATH: one group, one deployment
from multihome.api.policy_gate import PolicyGate
from multihome.config import parse_config
from multihome.routing.catalog import Catalog
from multihome.storage import SnapshotCache
from multihome.storage.store import Store, open_store
from multihome.storage.tables import api_keys, policies, tenants

POLICIES = 64
RULE_ITEMS = 2_000  # strings of ~125 characters: ~256 KiB of JSON per policy
KEY_TENANTS, KEYS = 50, 50_000


def _rules(n: int, salt: str) -> dict:
    """`n` model groups denied, 100 a rule (the most a rule's list holds)."""
    groups = [f"group-{salt}-{i:06d}-" + "x" * 100 for i in range(n)]
    return {"egress": [{"effect": "deny", "model_groups": groups[i : i + 100]} for i in range(0, n, 100)]}


async def _populate_big(store: Store) -> dict[str, str]:
    """A tenant with 16 MiB of policies, and 50,000 keys across 50 tenants, by SQL in one transaction each."""
    now = datetime.now(UTC)
    big = await store.create_tenant("big-policies", actor="bench")
    rows = [
        {
            "id": f"pol_bench{i:04d}",
            "tenant_id": big.id,
            "scope": "tenant",
            "scope_id": big.id,
            "rules": _rules(RULE_ITEMS, str(i)),
            "description": "",
            "created_at": now,
            "updated_at": now,
            "set_by_role": "org-admin",
        }
        for i in range(POLICIES)
    ]
    ten_rows = [
        {"id": f"ten_bench{t:04d}", "name": f"keys-{t}", "metadata": {}, "created_at": now} for t in range(KEY_TENANTS)
    ]
    key_rows = [
        {
            "id": f"key_bench{i:06d}",
            "tenant_id": f"ten_bench{i % KEY_TENANTS:04d}",
            "team_id": None,
            "name": f"k{i}",
            "prefix": f"b{i:07d}",
            "hash": f"{i:064x}",
            "roles": ["member"],
            "scopes_models": None,
            "scopes_endpoints": None,
            "metadata": {},
            "expires_at": None,
            "revoked_at": None,
            "created_at": now,
        }
        for i in range(KEYS)
    ]
    async with store._write() as conn:
        await conn.execute(sa.insert(policies), rows)
        await conn.execute(sa.insert(tenants), ten_rows)
        for start in range(0, len(key_rows), 5_000):
            await conn.execute(sa.insert(api_keys), key_rows[start : start + 5_000])
    await store.create_team(big.id, "bump", actor="bench")  # a recorded change: every replica reloads
    return {"tenant": big.id, "policy": rows[0]["id"], "key_tenant": ten_rows[0]["id"]}


async def _populate_small(store: Store) -> dict[str, str]:
    first = ""
    for t in range(10):
        ten = await store.create_tenant(f"small-{t}", actor="bench")
        await store.create_key(ten.id, name="k", actor="bench")
        await store.create_policy(ten.id, scope="tenant", scope_id=ten.id, rules={"r": [1]}, actor="bench")
        first = first or ten.id
    return {"tenant": first}


async def _gate(cache: SnapshotCache) -> PolicyGate:
    gate = PolicyGate(Catalog(parse_config(CONFIG)), cache)
    await gate.start()
    return gate


async def _measure(cache: SnapshotCache, gate: PolicyGate, write) -> tuple[float, float, float, float]:
    """(reload seconds, the loop's longest stall in seconds during it; the same for the policy engine's
    rebuild after it, in its worker thread as in the gateway) after `write()`; the write's own time in WROTE."""
    t0 = time.perf_counter()
    await write()
    WROTE.append(time.perf_counter() - t0)
    stall = 0.0
    done = False

    async def tick() -> None:
        nonlocal stall
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - t - 0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    await cache.refresh()
    took = time.perf_counter() - t0
    held = getattr(cache.snapshot, "held", None)  # None: a tree that reads every row at each reload
    READ.append(sum(held.read.values()) if held is not None else -1)
    reload_stall, stall = stall, 0.0
    t0 = time.perf_counter()
    await gate.refresh()
    built = time.perf_counter() - t0
    done = True
    await ticker
    return took, reload_stall, built, stall


Runs = list[tuple[float, float, float, float]]
READ: list[int] = []  # rows each reload read (-1: every row)
WROTE: list[float] = []  # each write's seconds, through the writer's store


async def _database(url: str, populate, writes: dict[str, str], rounds: int) -> dict[str, Runs]:
    """`rounds` runs of each of `writes` (scenario -> the writing function's name below) on the database at `url`,
    made by `populate(writer)`: one store handle writes, another holds the cache and the policy gate."""
    writer = await open_store(url, migrate=True)
    reader = await open_store(url)
    try:
        ids = await populate(writer)
        cache = SnapshotCache(reader)
        await cache.refresh()
        gate = await _gate(cache)
        n = 0

        async def policy() -> None:
            nonlocal n
            n += 1
            await writer.update_policy(
                ids["tenant"], ids["policy"], rules=_rules(RULE_ITEMS, f"edit{n}"), actor="tenant-admin"
            )

        async def key() -> None:
            nonlocal n
            n += 1
            await writer.create_key(ids["key_tenant"], name=f"new{n}", actor="bench")

        async def team() -> None:
            nonlocal n
            n += 1
            await writer.create_team(ids["tenant"], f"t{n}", actor="bench")

        made = {"policy": policy, "key": key, "team": team}
        return {name: [await _measure(cache, gate, made[w]) for _ in range(rounds)] for name, w in writes.items()}
    finally:
        await writer.close()
        await reader.close()


async def _scenarios(url: str, small_url: str, rounds: int) -> dict[str, Runs]:
    big = await _database(url, _populate_big, {"policy": "policy", "key": "key", "team": "team"}, rounds)
    return big | await _database(small_url, _populate_small, {"small": "team"}, rounds)


def _report(backend: str, results: dict[str, Runs]) -> None:
    for name, runs in results.items():
        took, stall, built, build_stall = ([r[i] * 1000 for r in runs] for i in range(4))
        read, wrote = READ[: len(runs)], WROTE[: len(runs)]
        del READ[: len(runs)], WROTE[: len(runs)]
        rows = "all" if min(read) < 0 else f"{max(read)}"
        print(
            f"{backend:9} {name:7} write median {statistics.median(wrote) * 1000:6.1f} ms  rows read {rows:>4}  "
            f"reload median {statistics.median(took):7.1f} ms  "
            f"max {max(took):7.1f} ms  "
            f"stall max {max(stall):6.1f} ms | policy engine median {statistics.median(built):7.1f} ms  "
            f"stall max {max(build_stall):6.1f} ms",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                urls = (f"sqlite+aiosqlite:///{Path(d) / 'big.db'}", f"sqlite+aiosqlite:///{Path(d) / 'small.db'}")
                _report(backend, asyncio.run(_scenarios(*urls, args.rounds)))
        else:
            from pg import PostgresServer  # tests/ on PYTHONPATH

            pg = PostgresServer()
            try:
                _report(backend, asyncio.run(_scenarios(pg.url, pg.create_database(), args.rounds)))
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
