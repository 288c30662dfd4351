"""What one periodic PostgreSQL poll costs the event loop: the snapshot's change counter (`version`) and the
job worker's peek (`peek`), in process against a real server (tests/pg.py), A/B over source trees in one run.

    PYTHONPATH=src .venv/bin/python bench/pg_polls.py [--trees base=/tmp/x,new=.] [--variants version,peek]
        [--polls 500] [--rounds 3] [--valgrind 200]

Per variant and tree, each in a process of its own: PostgreSQL round trips per poll (the process's
sendto calls under strace over 50 polls), event-loop thread CPU per poll (time.thread_time over `--polls`,
each of `--rounds`; noisy on a loaded machine), and with `--valgrind N` instructions per poll (a run of N
polls less a run of none). Variants beside the tree's own polls, for comparison (the counter's statement
through SQLAlchemy): `ac-checkout` (a pool checkout per poll, AUTOCOMMIT), `ac-held` (one held connection,
AUTOCOMMIT), `raw` (a plain asyncpg connection). Bounded: a fixed count of polls, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["response", "retention"]
COUNTER_SQL = "SELECT state_version.version FROM state_version WHERE state_version.id = $1::INTEGER"


async def child(args: argparse.Namespace) -> None:
    from multihome.state.jobs import JobQueue
    from multihome.storage.base import _VERSION
    from multihome.storage.engine import create_engine
    from multihome.storage.store import Store

    engine = create_engine(args.url)
    store, queue = Store(engine), JobQueue(engine)
    held: Any = None
    raw: Any = None

    async def ac_checkout() -> int:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return (await conn.execute(_VERSION)).scalar_one()

    async def ac_held() -> int:
        nonlocal held
        if held is None:
            held = await (await engine.connect()).execution_options(isolation_level="AUTOCOMMIT")
        return (await held.execute(_VERSION)).scalar_one()

    async def raw_asyncpg() -> int:
        nonlocal raw
        if raw is None:
            import asyncpg  # type: ignore[import-untyped]

            raw = await asyncpg.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
        return (await raw.fetch(COUNTER_SQL, 1))[0][0]

    poll = {
        "version": store.version,
        "peek": lambda: queue.claim("bench-owner", KINDS, lease_s=30),
        "ac-checkout": ac_checkout,
        "ac-held": ac_held,
        "raw": raw_asyncpg,
    }[args.variant]
    for _ in range(20):  # warm: connections opened, statements prepared and compiled
        await poll()
    if args.mode == "cpu":
        t0 = time.thread_time()
        for _ in range(args.polls):
            await poll()
        print(f"CPU {(time.thread_time() - t0) / args.polls * 1e6:.1f}", flush=True)
    elif args.mode == "strace":
        print("ATTACH", flush=True)
        sys.stdin.readline()  # strace is attached
        for _ in range(args.polls):
            await poll()
        print("DONE", flush=True)
        sys.stdin.readline()  # strace is detached
    else:  # under valgrind: the polls alone
        for _ in range(args.polls):
            await poll()
    if held is not None:
        await held.close()
    if raw is not None:
        await raw.close()
    await queue.close()
    await store.close()


def start(tree: str, variant: str, mode: str, polls: int, url: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{tree}/src"}
    cmd = [*prefix, sys.executable, __file__, "--child", "--variant", variant, "--mode", mode]
    return subprocess.Popen(
        [*cmd, "--polls", str(polls), "--url", url], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def round_trips(tree: str, variant: str, url: str, polls: int = 50) -> float:
    proc = start(tree, variant, "strace", polls, url)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ATTACH"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "strace.txt"
        trace = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=sendto", "-o", str(out), "-p", str(proc.pid)])
        time.sleep(1.5)  # attached by then
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "DONE"
        trace.terminate()
        trace.wait(30)
        sends = len(re.findall(r"\bsendto\(", out.read_text()))
    proc.stdin.write("end\n")
    proc.stdin.flush()
    proc.wait(60)
    return sends / polls


def cpu_us(tree: str, variant: str, url: str, polls: int) -> float:
    proc = start(tree, variant, "cpu", polls, url)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.wait(300)
    return float(line.split()[1])


def instructions(tree: str, variant: str, url: str, polls: int) -> float:
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (0, polls):
            out = Path(tmp) / f"cg.{n}"
            prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q")
            start(tree, variant, "valgrind", n, url, prefix).wait(1800)
            found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
            assert found is not None, "no total in the callgrind output"
            counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / polls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--polls", type=int, default=500)
    ap.add_argument("--trees", default=f"this={ROOT}", help="name=path,... (each a tree with src/)")
    ap.add_argument("--variants", default="version,peek")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--valgrind", type=int, default=0, help="polls per valgrind run (0: no valgrind)")
    args = ap.parse_args()
    if args.child:
        asyncio.run(child(args))
        return
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    sys.path.insert(0, str(ROOT / "tests"))
    from pg import PostgresServer

    pg = PostgresServer()
    try:
        url = pg.migrated_database()
        for variant in args.variants.split(","):
            for name, tree in trees.items():
                rt = round_trips(tree, variant, url)
                cpus = sorted(cpu_us(tree, variant, url, args.polls) for _ in range(args.rounds))
                line = f"{variant:12s} {name:8s} round trips/poll {rt:.2f}  loop CPU/poll "
                line += " / ".join(f"{c:.0f}" for c in cpus) + " us"
                if args.valgrind:
                    line += f"  instructions/poll {instructions(tree, variant, url, args.valgrind):,.0f}"
                print(line, flush=True)
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
