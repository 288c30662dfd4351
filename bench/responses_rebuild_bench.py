"""Rebuilding the context of a long Responses conversation from the state store (issue 15 target:
a 100-turn conversation in <= 2 ms).

    .venv/bin/python bench/responses_rebuild_bench.py [--turns 100] [--n 200] [--rounds 5]

What a turn with `previous_response_id` does before anything is sent upstream: the store's
`chain()` (one recursive query for the chain's ids, then the rows not already opened on this
replica, opened), and the items of every turn in order (`ResponsesDoor._context`). Measured three
ways, on SQLite with the `local` KMS:
- warm: the replica served the conversation's earlier turns (its opened-responses cache holds them);
- cold replica: another replica, whose cache is empty, continues it (every row is read and opened;
  the tenant's data key is cached, as after the first call any replica makes for that tenant);
- translation: the rebuilt context as the canonical chat request (to_canonical), for scale.
Each turn is ~300 characters in and out, as a chat turn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import msgspec

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from multihome.api.responses.items import new_id, stored_items
from multihome.api.responses.translate import message_item, output_text, to_canonical
from multihome.config.kms import KmsConfig
from multihome.crypto import init_key_file, open_keyring
from multihome.schema.responses import parse_create
from multihome.state import StateStore, StoredResponse
from multihome.state.cache import OpenedResponses
from multihome.storage import migrate_sync
from multihome.storage.engine import create_engine

TARGET_MS = 2.0
TENANT = "t-bench"
TEXT = "Please compare the regions on price, latency and data residency for this workload. " * 4


async def build_chain(store: StateStore, turns: int) -> str:
    prev = None
    for i in range(turns):
        rid = new_id("resp")
        answer = message_item(new_id("msg"), [output_text(f"Answer {i}: {TEXT}")], "completed")
        response = {"id": rid, "object": "response", "status": "completed", "output": [answer], "model": "m"}
        await store.put_response(
            StoredResponse(rid, TENANT, "completed", response, stored_items(f"Turn {i}: {TEXT}"), prev)
        )
        prev = rid
    assert prev is not None
    return prev


async def rebuild(store: StateStore, last: str) -> list[dict]:
    chain = await store.chain(TENANT, last)
    assert chain is not None
    context: list[dict] = []
    for turn in chain:
        context += turn.input
        context += turn.response.get("output") or []
    return context


async def timed(n: int, fn, cpu: list[float] | None = None) -> list[float]:
    """Wall ms per call; with `cpu`, the process's CPU ms per call (the reader thread's included) appended
    to it: on a shared machine the wall time also measures the other work, the CPU time much less."""
    out = []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - c0) * 1000)
    return out


async def main(args: argparse.Namespace, tmp: str, url: str) -> None:
    key = init_key_file(f"{tmp}/kms.key")
    kms = msgspec.convert({"backend": "local", "local": {"key_file": str(key)}}, KmsConfig)
    engine = create_engine(url)
    keyring = open_keyring(kms, engine)
    try:
        writer = StateStore(engine, keyring)
        replica = StateStore(engine, keyring)
        last = await build_chain(writer, args.turns)
        context = await rebuild(writer, last)
        assert len(context) == 2 * args.turns
        body = msgspec.json.encode({"model": "m", "input": "and the next step?", "previous_response_id": last})
        req = parse_create(body)
        new = stored_items(req.input)
        warm, cold, translate, cold_cpu = [], [], [], []
        for _ in range(args.rounds):
            warm.append(statistics.median(await timed(args.n, lambda: rebuild(writer, last))))

            async def cold_once() -> None:
                replica._opened = OpenedResponses(64 << 20)  # a replica that never opened these (its own threads warm)
                await rebuild(replica, last)

            cpu: list[float] = []
            cold.append(statistics.median(await timed(max(args.n // 4, 10), cold_once, cpu)))
            cold_cpu.append(statistics.median(cpu))

            async def canonical() -> None:
                await to_canonical(req, context, new)

            translate.append(statistics.median(await timed(args.n, canonical)))
    finally:
        await writer.close()
        await replica.close()
        await keyring.close()
        await engine.dispose()
    size = len(msgspec.json.encode(context))
    print(f"## Responses: rebuilding a {args.turns}-turn conversation (bench/responses_rebuild_bench.py)")
    print()
    print(
        f"SQLite, the `local` KMS, {args.turns} stored responses chained by previous_response_id "
        f"({2 * args.turns} items, {size // 1024} KiB of context); median of {args.rounds} round medians "
        f"(range in brackets); load average {os.getloadavg()[0]:.1f} at the end."
    )
    print()
    print("| measure | median (range) | target | met |")
    print("|---|---|---|---|")
    for name, values, target in (
        ("rebuild, warm (this replica served the earlier turns)", warm, TARGET_MS),
        ("rebuild, cold replica (every row read and opened)", cold, TARGET_MS),
        ("the same, process CPU time (the reader thread's included)", cold_cpu, TARGET_MS),
        ("the rebuilt context as a canonical chat request (to_canonical)", translate, None),
    ):
        med = statistics.median(values)
        met = "–" if target is None else ("yes" if med <= target else "**no**")
        print(
            f"| {name} | **{med:.2f} ms** ({min(values):.2f}–{max(values):.2f}) | "
            f"{'–' if target is None else f'≤ {target:g} ms'} | {met} |"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=100)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    tmp = tempfile.mkdtemp(prefix="rebuild-bench-")
    db = f"sqlite+aiosqlite:///{tmp}/bench.db"
    migrate_sync(db)  # before the loop runs: it runs its own
    asyncio.run(main(ap.parse_args(), tmp, db))
